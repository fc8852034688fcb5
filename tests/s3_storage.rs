//! Result files and uploads on an S3-compatible server (`EASEL_STORAGE_URL=s3://bucket/prefix`):
//! stored in the bucket, served through Easel's signed links by any node that shares the
//! signing key, swept after retention, and checked by `/readyz`.
//!
//! These tests need a server at `EASEL_TEST_S3_ENDPOINT` (`.ci/run` starts moto for them);
//! without it they say so and pass.

mod common;

use std::sync::Once;

use common::*;
use easel::db::{Db, now_ms};
use serde_json::{Value, json};

/// The test server, with the `AWS_*` variables Easel's S3 store reads pointed at it; `None`
/// (the reason printed) when no server is configured.
fn s3(test: &str) -> Option<S3Server> {
    let server = s3_server(test)?;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (key, value) in server.env() {
            // Left out on purpose: an http:// endpoint is enough to allow plain http.
            if key != "AWS_ALLOW_HTTP" {
                // SAFETY: every test in this file calls this before anything else, and the Once
                // makes the others wait until the variables are written, so nothing reads the
                // environment while it changes.
                unsafe { std::env::set_var(key, value) };
            }
        }
    });
    Some(server)
}

/// Every key in the bucket, read straight from the server.
async fn bucket_keys(server: &S3Server, bucket: &str) -> Vec<String> {
    let url = format!("{}/{bucket}?list-type=2", server.endpoint);
    let xml = reqwest::get(url).await.unwrap().text().await.unwrap();
    xml.split("<Key>").skip(1).map(|rest| rest.split("</Key>").next().unwrap().to_owned()).collect()
}

/// An object read with a client of the test's own (reads must be signed).
async fn object(server: &S3Server, bucket: &str, key: &str) -> Vec<u8> {
    use object_store::ObjectStore;
    let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
    for (key, value) in server.env() {
        builder = builder.with_config(key.to_ascii_lowercase().parse().unwrap(), value);
    }
    let s3 = builder.build().unwrap();
    let found = s3.get(&object_store::path::Path::from(key)).await.unwrap_or_else(|e| panic!("{key}: {e}"));
    found.bytes().await.unwrap().to_vec()
}

async fn spawn_on_s3(bucket: &str, prefix: &str) -> TestApp {
    let url = format!("s3://{bucket}/{prefix}");
    spawn_app_with(move |c| c.storage_url = Some(url)).await
}

#[tokio::test]
async fn results_are_kept_in_the_bucket_and_served_through_signed_links() {
    let Some(server) = s3("results_are_kept_in_the_bucket_and_served_through_signed_links") else { return };
    let bucket = server.create_bucket().await;
    let app = spawn_on_s3(&bucket, "easel/prod").await;
    let task = app.submit_ok("seedream-5-0", &seedream_t2i(2)).await;
    let urls = result_urls(&app.wait_done("seedream-5-0", &task).await);
    assert_eq!(urls.len(), 2);
    let mut keys = bucket_keys(&server, &bucket).await;
    keys.sort();
    let expected: Vec<String> = urls.iter().map(|u| format!("easel/prod/{}", key_of(u))).collect();
    assert_eq!(keys, expected, "the results are in the bucket, under the prefix, and nothing else yet");
    // A thumbnail is made from the result in the bucket when first asked for, and kept there.
    let thumb_url = app.state.storage.signed_url(&easel::tasks::thumbnail_key(&key_of(&urls[1])), now_ms() + 60_000);
    let res = app.client.get(&thumb_url).send().await.unwrap();
    assert_eq!((res.status().as_u16(), res.headers()["content-type"].to_str().unwrap()), (200, "image/webp"));
    let shard = &task[task.len() - 2..];
    let thumb_key = format!("easel/prod/thumbs/{shard}/{task}-1.webp");
    assert!(bucket_keys(&server, &bucket).await.contains(&thumb_key), "kept beside the results");
    assert_eq!(res.bytes().await.unwrap().to_vec(), object(&server, &bucket, &thumb_key).await);
    for (url, key) in urls.iter().zip(&keys) {
        assert!(url.starts_with(&app.base), "links are Easel's own: {url}");
        let (_, img) = download(&app.client, url).await;
        assert_eq!((img.width(), img.height()), (2048, 2048));
        let served = app.client.get(url).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(served.to_vec(), object(&server, &bucket, key).await, "served bytes are the stored ones");
    }
    assert!(!app.data_dir.path().join("files").exists(), "nothing is written to the local disk");
}

#[tokio::test]
async fn edit_uploads_live_in_the_bucket_and_are_swept_with_the_results() {
    let Some(server) = s3("edit_uploads_live_in_the_bucket_and_are_swept_with_the_results") else { return };
    let bucket = server.create_bucket().await;
    let app = spawn_on_s3(&bucket, "").await;
    let part = reqwest::multipart::Part::bytes(green_png()).file_name("ref.png").mime_str("image/png").unwrap();
    let form = reqwest::multipart::Form::new()
        .part("image", part)
        .text("model", "gpt-image-1")
        .text("prompt", "make it green")
        .text("response_format", "url");
    let res = app.client.post(app.url("/v1/images/edits")).bearer_auth(&app.key).multipart(form).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let url = body["data"][0]["url"].as_str().unwrap_or_else(|| panic!("a link: {body}")).to_owned();
    let (_, img) = download(&app.client, &url).await;
    let img = img.to_rgb8();
    assert!(green_pixels(&img) > img.pixels().len() / 4, "the worker read the upload back from the bucket");
    let thumb_url = app.state.storage.signed_url(&easel::tasks::thumbnail_key(&key_of(&url)), now_ms() + 60_000);
    assert_eq!(app.client.get(&thumb_url).send().await.unwrap().status(), 200);
    let keys = bucket_keys(&server, &bucket).await;
    assert_eq!(keys.len(), 3, "the result, its thumbnail and the upload: {keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("thumbs/") && k.ends_with("-0.webp")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("uploads/") && k.ends_with("/image0.png")), "{keys:?}");

    let swept = easel::retention::sweep(&app.state.tasks, &app.state.storage, now_ms() + 1).await.unwrap();
    assert_eq!(swept, 1);
    assert_eq!(bucket_keys(&server, &bucket).await, Vec::<String>::new(), "results and uploads are deleted");
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 410);
}

#[tokio::test]
async fn a_second_node_serves_links_the_first_one_made() {
    let Some(server) = s3("a_second_node_serves_links_the_first_one_made") else { return };
    let bucket = server.create_bucket().await;
    let first = spawn_on_s3(&bucket, "shared").await;
    let task = first.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    let url = result_urls(&first.wait_done("gpt-image-1", &task).await).remove(0);

    // Nodes share the URL signing key through the database. On PostgreSQL the second node
    // shares the first one's; SQLite allows one server, so the second node's own database gets
    // the first one's key.
    let second_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&second_dir);
    config.storage_url = Some(format!("s3://{bucket}/shared"));
    config.database_url = first.database_url.clone();
    if config.database_url.is_none() {
        copy_signing_key(&first, &config.database_url()).await;
    }
    let second = easel::Application::build(config).await.unwrap();
    let second_base = format!("http://{}", second.local_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let _serving = tokio::spawn(second.run(stop.clone()));

    let via_second = url.replace(&first.base, &second_base);
    assert_ne!(via_second, url);
    let from_second = first.client.get(&via_second).send().await.unwrap();
    assert_eq!(from_second.status(), 200);
    let from_first = first.client.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(from_second.bytes().await.unwrap(), from_first);
}

async fn copy_signing_key(from: &TestApp, to_database: &str) {
    let signing_key: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = 'url_signing_key'")
        .fetch_one(&from.state.db.read)
        .await
        .unwrap();
    let db = Db::connect(to_database).await.unwrap();
    sqlx::query("INSERT INTO settings (key, value) VALUES ('url_signing_key', $1)")
        .bind(&signing_key)
        .execute(&db.write)
        .await
        .unwrap();
    db.close().await;
}

#[tokio::test]
async fn readiness_lists_the_bucket() {
    let Some(server) = s3("readiness_lists_the_bucket") else { return };
    let bucket = server.create_bucket().await;
    let app = spawn_on_s3(&bucket, "p").await;
    let body: Value = app.client.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body, json!({"status": "ok", "checks": {"database": "ok", "storage": "ok"}}));

    let missing = spawn_on_s3(&format!("{bucket}-missing"), "p").await;
    let res = missing.client.get(missing.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["storage"], "failed", "{body}");
    assert_eq!(body["checks"]["database"], "ok");
}
