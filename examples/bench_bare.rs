//! The practical limit of Easel's HTTP stack, for `bench/run`: bare axum handlers on the same
//! routes as Easel that answer with fixed bytes (a real status body that `bench/run` captured
//! from Easel, and a submit answer), without auth, database or middleware.
//!
//! Usage: `bench_bare ADDR STATUS_BODY_FILE`

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};

const SUBMITTED: &[u8] = br#"{"code":200,"message":"success","data":{"taskId":"task_0000000000000000000000000000"}}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(body_file)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bench_bare ADDR STATUS_BODY_FILE");
    };
    let status = Bytes::from(std::fs::read(&body_file)?);
    let app = Router::new()
        .route("/api/v1/statusTask/{model}", get(move || async move { json(status.clone()) }))
        // The request body is read, as Easel reads it, and dropped.
        .route("/api/v1/generateTask/{model}", post(|_body: Bytes| async { json(Bytes::from_static(SUBMITTED)) }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bench_bare listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

fn json(body: Bytes) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], body)
}
