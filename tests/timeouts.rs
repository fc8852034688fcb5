//! A task that outlives `task_timeout_secs` fails with TIMEOUT and is not charged.

mod common;

use common::*;

#[tokio::test]
async fn slow_task_times_out_and_is_refunded() {
    let app = spawn_app_with(|c| {
        c.server.task_timeout_secs = 1;
        c.local.latency_ms = 60_000;
    })
    .await;
    let task = app.submit_ok("seedream-5-0", &seedream_t2i(3)).await;
    let data = app.wait_done("seedream-5-0", &task).await;
    assert_eq!(data["state"], "failed");
    assert_eq!(data["failCode"], "TIMEOUT");
    assert!(data["failMsg"].as_str().unwrap().contains("1 seconds"), "{data}");
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!((account.balance.0, account.held.0), (10_000_000, 0));
}
