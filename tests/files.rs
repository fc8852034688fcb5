//! Result links: served by Easel with the right headers, signed (403 when tampered with),
//! expiring (410), and swept once the retention period is over.

mod common;

use common::*;
use easel::db::now_ms;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::{Value, json};

async fn finished_png(app: &TestApp) -> (String, Value) {
    let body = json!({"input": {"mode": "text-to-image", "prompt": "a kite", "max_images": 1,
        "size": "1280x720", "output_format": "png"}});
    let task = app.submit_ok("seedream-5-0", &body).await;
    let data = app.wait_done("seedream-5-0", &task).await;
    (result_urls(&data)[0].clone(), data)
}

#[tokio::test]
async fn links_serve_bytes_with_type_length_and_etag() {
    let app = spawn_app().await;
    let (url, _) = finished_png(&app).await;
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[CONTENT_TYPE], "image/png");
    let length: usize = res.headers()[CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
    let etag = res.headers()[ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let bytes = res.bytes().await.unwrap();
    assert_eq!(bytes.len(), length);
    assert_eq!(image::guess_format(&bytes).unwrap(), image::ImageFormat::Png);

    let again = app.client.get(&url).header(IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
}

#[tokio::test]
async fn tampered_links_are_403_and_expired_ones_410() {
    let app = spawn_app().await;
    let (url, _) = finished_png(&app).await;
    let (path, query) = url.split_once('?').unwrap();
    let exp: i64 = query.split('&').next().unwrap().trim_start_matches("exp=").parse().unwrap();
    let sig = query.split("sig=").nth(1).unwrap();

    let get = |u: String| app.client.get(u).send();
    // Changed signature, extended expiry, another file, no signature at all.
    let mut bad_sig = sig.to_owned();
    bad_sig.replace_range(0..1, if sig.starts_with('A') { "B" } else { "A" });
    for tampered in [
        format!("{path}?exp={exp}&sig={bad_sig}"),
        format!("{path}?exp={}&sig={sig}", exp + 86_400),
        format!("{}?exp={exp}&sig={sig}", path.replace("-0.png", "-1.png")),
        path.to_owned(),
    ] {
        let res = get(tampered.clone()).await.unwrap();
        assert_eq!(res.status(), 403, "{tampered}");
        let json: Value = res.json().await.unwrap();
        assert_eq!(json["code"], 403);
    }

    // A correctly signed link whose time is up.
    let expired = app.state.storage.signed_url(&key_of(&url), now_ms() - 1000);
    let res = get(expired).await.unwrap();
    assert_eq!(res.status(), 410);
    let json: Value = res.json().await.unwrap();
    assert_eq!(json["message"], "this link has expired");
}

#[tokio::test]
async fn sweeper_deletes_results_after_retention() {
    let app = spawn_app().await;
    let (url, data) = finished_png(&app).await;
    let completed = data["completeTime"].as_i64().unwrap();
    let retention = app.state.config.retention_ms();
    // Just inside the retention period nothing is swept.
    let swept = easel::retention::sweep(&app.state.tasks, &app.state.storage, completed - 1).await.unwrap();
    assert_eq!(swept, 0);
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);
    // As of the end of the retention period the files go.
    let swept = easel::retention::sweep(&app.state.tasks, &app.state.storage, completed + retention).await.unwrap();
    assert_eq!(swept, 1);
    let path = app.data_dir.path().join("files").join(key_of(&url));
    assert!(!path.exists(), "{} still exists", path.display());
    let task_dir = path.parent().unwrap();
    assert!(!task_dir.exists(), "the task's emptied folder {} is left behind", task_dir.display());
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 410);
    // A second sweep finds nothing more to do.
    assert_eq!(easel::retention::sweep(&app.state.tasks, &app.state.storage, completed + retention).await.unwrap(), 0);
}

#[tokio::test]
async fn links_expire_with_the_retention_period() {
    let app = spawn_app_with(|c| c.server.result_retention_days = 3).await;
    let (url, data) = finished_png(&app).await;
    let exp: i64 = url.split("exp=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
    let completed = data["completeTime"].as_i64().unwrap();
    assert_eq!(exp, (completed + 3 * 86_400_000) / 1000);
}
