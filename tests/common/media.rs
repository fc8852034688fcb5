//! Images that are hostile to decode, and a loopback host serving them.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// A PNG declaring `width × height` grey pixels of zero in very few bytes (13000×13000 is about
/// half a megabyte): the rows go through the encoder's deflate stream one at a time, so making
/// it never holds the image.
pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Balanced);
    let mut writer = encoder.write_header().unwrap();
    let mut stream = writer.stream_writer().unwrap();
    let row = vec![0u8; width as usize];
    for _ in 0..height {
        std::io::Write::write_all(&mut stream, &row).unwrap();
    }
    stream.finish().unwrap();
    drop(writer);
    out
}

/// Serves each `(path, bytes)` as `image/png` on loopback (fetch it with
/// `allow_private_network`).
pub async fn serve_pngs(files: Vec<(&'static str, Vec<u8>)>) -> SocketAddr {
    let mut app = Router::new();
    for (path, bytes) in files {
        app =
            app.route(path, get(move || async move { ([(header::CONTENT_TYPE, "image/png")], bytes).into_response() }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The peak resident memory (VmHWM) of process `pid`, in MiB; `None` where /proc is missing.
pub fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
