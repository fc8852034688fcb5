//! Thumbnails: made from the stored result when first asked for and kept from then on, served
//! behind signed links like the images, and deleted with them.

mod common;

use common::*;
use easel::db::now_ms;
use easel::ids::TaskId;
use easel::tasks::Task;
use serde_json::{Value, json};

async fn task(app: &TestApp, id: &str) -> Task {
    app.state.tasks.get(&TaskId::parse(id).unwrap()).await.unwrap().expect("the task exists")
}

/// Downloads a thumbnail: WebP, and how many bytes it is.
async fn thumbnail(app: &TestApp, url: &str) -> (image::DynamicImage, usize) {
    let res = app.client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    assert_eq!(res.headers()["content-type"], "image/webp");
    let bytes = res.bytes().await.unwrap();
    assert_eq!(image::guess_format(&bytes).unwrap(), image::ImageFormat::WebP);
    (image::load_from_memory(&bytes).unwrap(), bytes.len())
}

/// A thumbnail's longest side is 256 px and its aspect ratio is the image's, to the pixel.
fn assert_fits(thumb: &image::DynamicImage, image: &image::DynamicImage) {
    let (w, h) = (thumb.width(), thumb.height());
    assert_eq!(w.max(h), 256, "{w}x{h}");
    let expected = f64::from(image.width()) / f64::from(image.height());
    let short = f64::from(w.min(h));
    let long_side_ratio = if image.width() >= image.height() { expected } else { 1.0 / expected };
    assert!((256.0 / long_side_ratio - short).abs() <= 1.0, "{w}x{h} for {}x{}", image.width(), image.height());
}

fn seedream(size: &str, images: u32, format: &str) -> Value {
    json!({"input": {"mode": "text-to-image", "prompt": "a harbour at dawn with boats", "max_images": images,
        "size": size, "output_format": format}})
}

#[tokio::test]
async fn a_finished_task_has_a_small_webp_thumbnail_of_each_image() {
    let app = spawn_app().await;
    let id = app.submit_ok("seedream-5-0", &seedream("1280x720", 2, "png")).await;
    let data = app.wait_done("seedream-5-0", &id).await;
    let images = result_urls(&data);
    let thumbs = app.state.links.thumbnails(&task(&app, &id).await);
    assert_eq!(thumbs.len(), 2);
    for (image_url, thumb_url) in images.iter().zip(&thumbs) {
        assert!(thumb_url.contains("/files/thumbs/") && thumb_url.contains(&format!("/{id}-")), "{thumb_url}");
        // Signed like the image, expiring with it.
        let exp = |u: &str| u.split("exp=").nth(1).unwrap().split('&').next().unwrap().to_owned();
        assert_eq!(exp(thumb_url), exp(image_url));
        let file = app.data_dir.path().join("files").join(key_of(thumb_url));
        assert!(!file.exists(), "no thumbnail is made before it is asked for");
        let (_, image) = download(&app.client, image_url).await;
        let (thumb, bytes) = thumbnail(&app, thumb_url).await;
        assert_fits(&thumb, &image);
        assert_eq!((thumb.width(), thumb.height()), (256, 144));
        eprintln!("thumbnail of a 1280x720 local render: {bytes} bytes");
        assert_eq!(std::fs::read(&file).unwrap().len(), bytes, "kept once made");
        // The second answer is the stored file, with its ETag.
        let again = app.client.get(thumb_url).send().await.unwrap();
        assert_eq!(again.status(), 200);
        assert!(again.headers().contains_key("etag"));
        assert_eq!(again.bytes().await.unwrap().len(), bytes);
    }
}

#[tokio::test]
async fn portrait_and_converted_results_keep_their_aspect() {
    // Seedream renders no WebP and the local renderer answers in the task's format, so to see a
    // conversion the upstream must answer in another format: an APIXO reseller answers PNG.
    let fake = apixo_fake::spawn("seedream-5-0", 0).await;
    let app = spawn_app_with(|c| c.channels = vec![fake.channel("reseller", 0)]).await;
    let id = app.submit_ok("seedream-5-0", &seedream("720x1280", 1, "jpeg")).await;
    let data = app.wait_done("seedream-5-0", &id).await;
    let image_url = &result_urls(&data)[0];
    let (format, image) = download(&app.client, image_url).await;
    assert_eq!(format, image::ImageFormat::Jpeg, "converted from the upstream's PNG");
    let thumbs = app.state.links.thumbnails(&task(&app, &id).await);
    let (thumb, _) = thumbnail(&app, &thumbs[0]).await;
    assert_fits(&thumb, &image);
    assert_eq!((thumb.width(), thumb.height()), (144, 256));
    fake.assert_clean();
}

#[tokio::test]
async fn deleting_a_tasks_images_deletes_their_thumbnails() {
    let app = spawn_app().await;
    let id = app.submit_ok("seedream-5-0", &seedream_t2i(1)).await;
    app.wait_done("seedream-5-0", &id).await;
    let thumb_url = app.state.links.thumbnails(&task(&app, &id).await)[0].clone();
    thumbnail(&app, &thumb_url).await;
    let file = app.data_dir.path().join("files").join(key_of(&thumb_url));
    assert!(file.exists(), "{}", file.display());

    let res = app.client.delete(app.url(&format!("/api/v1/tasks/{id}/images"))).bearer_auth(&app.key).send().await;
    assert_eq!(res.unwrap().status(), 200);
    assert!(!file.exists(), "{} is left behind", file.display());
    // Gone, as a deleted image's link is.
    assert_eq!(app.client.get(&thumb_url).send().await.unwrap().status(), 410);
}

#[tokio::test]
async fn the_retention_sweep_removes_thumbnails() {
    let app = spawn_app().await;
    let id = app.submit_ok("seedream-5-0", &seedream_t2i(1)).await;
    let data = app.wait_done("seedream-5-0", &id).await;
    let thumb_url = app.state.links.thumbnails(&task(&app, &id).await)[0].clone();
    thumbnail(&app, &thumb_url).await;
    let file = app.data_dir.path().join("files").join(key_of(&thumb_url));
    assert!(file.exists(), "{}", file.display());

    let completed = data["completeTime"].as_i64().unwrap();
    let cutoff = completed + app.state.config.retention_ms();
    assert_eq!(easel::retention::sweep(&app.state.tasks, &app.state.storage, cutoff).await.unwrap(), 1);
    assert!(!file.exists(), "{} is left behind", file.display());
    assert!(!file.parent().unwrap().exists(), "the emptied thumbs/<shard>/ folder goes too");
    assert_eq!(app.client.get(&thumb_url).send().await.unwrap().status(), 410);
}

#[tokio::test]
async fn a_result_that_cannot_be_decoded_has_no_thumbnail_and_its_link_answers_410() {
    let app = spawn_app().await;
    // A result file that is no image (damaged on disk, say), stored where a task's would be.
    let results = app.data_dir.path().join("files/results/zz");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(results.join("task_damaged0zz-0.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let thumb_key = "thumbs/zz/task_damaged0zz-0.webp";
    let url = app.state.storage.signed_url(thumb_key, now_ms() + 60_000);
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 410);
    let body: Value = res.json().await.unwrap();
    let answer = (body["code"].as_i64(), body["message"].as_str());
    assert_eq!(answer, (Some(410), Some("this file has been deleted")), "in the API's envelope: {body}");
    assert!(!app.data_dir.path().join("files").join(thumb_key).exists(), "nothing is stored");
    // No result at all: the same answer.
    let missing = app.state.storage.signed_url("thumbs/zz/task_never0zz-0.webp", now_ms() + 60_000);
    assert_eq!(app.client.get(&missing).send().await.unwrap().status(), 410);
}
