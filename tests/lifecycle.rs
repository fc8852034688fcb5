//! A task's whole life, visible and controllable: cancel (waiting or running, and racing the
//! finish), `Cancel-After` deadlines, queue position and progress, and the live event stream
//! with `Last-Event-ID`, on one node and across nodes.

mod common;

use std::time::Duration;

use common::sse::{Frame, SseStream};
use common::*;
use easel::config::Role;
use serde_json::{Value, json};

const SEEDREAM: &str = "seedream-5-0";
/// Seedream 5.0's price per image, in micro-dollars (seeds 001).
const SEEDREAM_MICROS: i64 = 32_000;

async fn balance_micros(app: &TestApp) -> (i64, i64) {
    let account = app.state.accounts.find("default").await.unwrap();
    (account.balance.0, account.held.0)
}

async fn cancel(app: &TestApp, id: &str) -> (u16, Value) {
    app.post_json(&format!("/api/v1/tasks/{id}/cancel"), &[], &json!({})).await
}

fn events_url(app: &TestApp, id: &str) -> String {
    app.url(&format!("/api/v1/tasks/{id}/events"))
}

fn kinds(events: &[common::sse::SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.event.clone()).collect()
}

#[tokio::test]
async fn a_waiting_task_is_cancelled_at_once_with_its_hold_released() {
    // No workers: the task stays in the queue.
    let app = spawn_app_with(|c| c.role = Role::Api).await;
    let before = balance_micros(&app).await;
    let id = app.submit_ok(SEEDREAM, &seedream_t2i(2)).await;
    assert_eq!(balance_micros(&app).await, (before.0 - 2 * SEEDREAM_MICROS, 2 * SEEDREAM_MICROS));

    let (status, body) = cancel(&app, &id).await;
    assert_eq!(status, 200, "{body}");
    let view = &body["data"];
    assert_eq!(view["state"], "cancelled", "{view}");
    assert_eq!(view["failCode"], "CANCELLED");
    assert_eq!(view["heldUsd"], 0.0);
    assert_eq!(view["chargedUsd"], 0.0);
    assert_eq!(balance_micros(&app).await, before, "the whole hold comes back");
    assert_ledger_invariant(&app.state, "default").await;

    // The seeds' dialect has no `cancelled`: it reads failed with CANCELLED.
    let (_, status) = app.status(SEEDREAM, &id).await;
    assert_eq!(status["data"]["state"], "failed", "{status}");
    assert_eq!(status["data"]["failCode"], "CANCELLED");

    // Again: the same answer, nothing released twice.
    let (again, body) = cancel(&app, &id).await;
    assert_eq!((again, body["data"]["state"].as_str()), (200, Some("cancelled")));
    assert_eq!(balance_micros(&app).await, before);

    // The list tells cancelled from failed.
    let (_, cancelled) = app.get_json("/api/v1/tasks?state=cancelled").await;
    assert_eq!(cancelled["data"]["tasks"].as_array().unwrap().len(), 1, "{cancelled}");
    let (_, failed) = app.get_json("/api/v1/tasks?state=failed").await;
    assert_eq!(failed["data"]["tasks"].as_array().unwrap().len(), 0, "{failed}");

    // Its events: created, then cancelled.
    let mut stream = SseStream::open(&app.client, &events_url(&app, &id), &app.key, None).await;
    let events = stream.rest().await;
    assert_eq!(kinds(&events), ["created", "cancelled"]);
    assert_eq!(events[1].data["state"], "cancelled");
}

#[tokio::test]
async fn a_task_that_ended_cannot_be_cancelled_and_others_tasks_are_not_found() {
    let app = spawn_app().await;
    let id = app.submit_ok(SEEDREAM, &seedream_t2i(1)).await;
    app.wait_done(SEEDREAM, &id).await;
    let (status, body) = cancel(&app, &id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(app.task_view(&id).await["state"], "success");

    let other = app.state.accounts.create("other", easel::money::Micros::from_usd(1.0).unwrap()).await.unwrap();
    let res = app
        .client
        .post(app.url(&format!("/api/v1/tasks/{id}/cancel")))
        .bearer_auth(&other.key.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let (status, _) = cancel(&app, "task_doesnotexist").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_running_task_stops_when_cancelled_and_is_charged_nothing() {
    // A minute per 2K image: it is surely still running when the cancel lands.
    let app = spawn_app_with(|c| c.local.latency_ms = 60_000).await;
    let before = balance_micros(&app).await;
    let id = app.submit_ok(SEEDREAM, &seedream_t2i(1)).await;
    app.wait_for_state(&id, "processing").await;

    let (status, body) = cancel(&app, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "cancelled", "the worker stopped it: {body}");
    assert_eq!(body["data"]["progress"]["imagesDone"], 0);
    assert_eq!(body["data"]["chargedUsd"], 0.0);
    assert_eq!(balance_micros(&app).await, before);
    assert_ledger_invariant(&app.state, "default").await;
    let (_, status) = app.status(SEEDREAM, &id).await;
    assert_eq!(
        (status["data"]["state"].as_str(), status["data"]["failCode"].as_str()),
        (Some("failed"), Some("CANCELLED"))
    );
    // The channel that was working on it is free again: a new task runs.
    let (_, views) = app.get_json("/api/v1/tasks?state=processing").await;
    assert!(views["data"]["tasks"].as_array().unwrap().is_empty(), "{views}");
}

#[tokio::test]
async fn cancels_racing_the_finish_leave_one_outcome_each_and_an_exact_ledger() {
    // Two workers, a fifth of a second a task. Half the cancels go out at once (most of those
    // tasks are still waiting), the other half far apart (most of those finish first), and
    // wherever a cancel meets a finish, exactly one of them counts.
    let app = spawn_app_with(|c| {
        c.local.latency_ms = 200;
        c.server.limits = false;
        c.server.workers = 2;
    })
    .await;
    let before = balance_micros(&app).await;
    let mut ids = Vec::new();
    for _ in 0..24 {
        ids.push(app.submit_ok(SEEDREAM, &seedream_t2i(1)).await);
    }
    let cancels = ids.iter().enumerate().map(|(i, id)| {
        let app = &app;
        let delay = if i % 2 == 1 { 0 } else { 300 * i as u64 };
        async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            cancel(app, id).await
        }
    });
    let answers = futures::future::join_all(cancels).await;
    let (mut succeeded, mut cancelled) = (0i64, 0);
    for ((status, body), id) in answers.iter().zip(&ids) {
        let view = app.task_view(id).await;
        let view = if view["state"] == "processing" { app.wait_for_state(id, "cancelled").await } else { view };
        match view["state"].as_str().unwrap() {
            "success" => {
                succeeded += 1;
                assert_eq!(*status, 409, "a cancel after the end is refused: {body}");
                assert_eq!(view["chargedUsd"], 0.032);
            }
            "cancelled" => {
                cancelled += 1;
                assert_eq!(*status, 200, "{body}");
                assert_eq!(view["chargedUsd"], 0.0, "{view}");
            }
            other => panic!("task {id} ended {other}: {view}"),
        }
        // Exactly one end: one final event, and the stream ends with it.
        let mut stream = SseStream::open(&app.client, &events_url(&app, id), &app.key, None).await;
        let events = stream.rest().await;
        let finals = events.iter().filter(|e| ["succeeded", "failed", "cancelled"].contains(&e.event.as_str())).count();
        assert_eq!(finals, 1, "{:?}", kinds(&events));
    }
    assert!(succeeded > 0 && cancelled > 0, "{succeeded} succeeded, {cancelled} cancelled");
    assert_eq!(succeeded + cancelled, ids.len() as i64);
    assert_eq!(balance_micros(&app).await, (before.0 - succeeded * SEEDREAM_MICROS, 0));
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn cancel_after_ends_a_task_not_done_in_time_waiting_or_running() {
    let waiting = spawn_app_with(|c| c.role = Role::Api).await;
    let (status, body) = waiting
        .post_json(&format!("/api/v1/generateTask/{SEEDREAM}"), &[("cancel-after", "1s")], &seedream_t2i(1))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["taskId"].as_str().unwrap().to_owned();
    assert!(waiting.task_view(&id).await["cancelAt"].as_i64().is_some());
    let view = waiting.wait_for_state(&id, "cancelled").await;
    assert!(view["failMsg"].as_str().unwrap().contains("Cancel-After"), "{view}");
    assert_eq!(balance_micros(&waiting).await.1, 0, "nothing stays held");

    let running = spawn_app_with(|c| c.local.latency_ms = 60_000).await;
    let (_, body) = running
        .post_json(
            "/api/v1/images/generations",
            &[("cancel-after", "2s")],
            &json!({"model": "gpt-image-1", "prompt": "slow", "n": 1}),
        )
        .await;
    let id = body["data"]["taskId"].as_str().expect("the unified API takes Cancel-After too").to_owned();
    running.wait_for_state(&id, "processing").await;
    let view = running.wait_for_state(&id, "cancelled").await;
    assert_eq!(view["chargedUsd"], 0.0);
    assert_ledger_invariant(&running.state, "default").await;

    // A duration that is not one is refused in the API's own envelope, and nothing is held.
    for bad in ["soon", "0s", "400d"] {
        let (status, body) = running
            .post_json(&format!("/api/v1/generateTask/{SEEDREAM}"), &[("cancel-after", bad)], &seedream_t2i(1))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["message"].as_str().unwrap_or_default().contains("Cancel-After"), "{body}");
    }
}

#[tokio::test]
async fn a_waiting_task_knows_its_place_in_the_queue_and_hears_it_move() {
    let app = spawn_app_with(|c| c.role = Role::Api).await;
    let first = app.submit_ok(SEEDREAM, &seedream_t2i(1)).await;
    let _second = app.submit_ok(SEEDREAM, &seedream_t2i(1)).await;
    let third = app.submit_ok(SEEDREAM, &seedream_t2i(1)).await;
    assert_eq!(app.task_view(&third).await["progress"]["queuePosition"], 3);
    assert_eq!(app.task_view(&first).await["progress"]["queuePosition"], 1);

    let mut stream = SseStream::open(&app.client, &events_url(&app, &third), &app.key, None).await;
    let created = stream.next_event().await.unwrap();
    assert_eq!((created.event.as_str(), created.id.as_deref()), ("created", Some("1")));
    let place = stream.next_event().await.unwrap();
    assert_eq!(place.event, "progress");
    assert_eq!(place.id, None, "queue positions are not stored events");
    assert_eq!(place.data["queuePosition"], 3);
    cancel(&app, &first).await;
    let moved = stream.next_event().await.unwrap();
    assert_eq!(moved.data["queuePosition"], 2, "{moved:?}");
}

#[tokio::test]
async fn the_event_stream_tells_every_change_and_resumes_after_the_last_event_id() {
    // One second of rendering in ten reported steps: some progress events.
    let app = spawn_app_with(|c| c.local.latency_ms = 1_000).await;
    let id = app.submit_ok(SEEDREAM, &seedream_t2i(2)).await;
    let mut stream = SseStream::open(&app.client, &events_url(&app, &id), &app.key, None).await;
    assert!(stream.content_type.starts_with("text/event-stream"), "{}", stream.content_type);
    let events = stream.rest().await;
    // While it waits, id-less queue positions may come between the stored events.
    let waiting: Vec<_> = events.iter().filter(|e| e.id.is_none()).collect();
    assert!(waiting.iter().all(|e| e.event == "progress" && e.data["queuePosition"].is_u64()), "{waiting:?}");
    let stored_only: Vec<_> = events.iter().filter(|e| e.id.is_some()).cloned().collect();
    let names = kinds(&stored_only);
    assert_eq!(names.first().map(String::as_str), Some("created"), "{names:?}");
    assert_eq!(names.get(1).map(String::as_str), Some("started"), "{names:?}");
    assert!(names.iter().any(|n| n == "progress"), "the renderer reports progress: {names:?}");
    assert_eq!(names.iter().filter(|n| *n == "image").count(), 2, "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("succeeded"), "the stream ends after the end: {names:?}");
    let stored: Vec<&common::sse::SseEvent> = events.iter().filter(|e| e.id.is_some()).collect();
    let seqs: Vec<i64> = stored.iter().map(|e| e.id.as_ref().unwrap().parse().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "ids count up from 1");
    for e in &stored {
        assert_eq!(e.data["taskId"], id.as_str());
        assert_eq!(e.data["type"], e.event.as_str());
        assert_eq!(e.data["seq"].to_string(), *e.id.as_ref().unwrap());
    }
    assert_eq!(stored[1].data["channel"], "local");
    let progress: Vec<i64> =
        stored.iter().filter(|e| e.event == "progress").map(|e| e.data["percent"].as_i64().unwrap()).collect();
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "progress only grows: {progress:?}");
    let image = stored.iter().find(|e| e.event == "image").unwrap();
    let url = image.data["url"].as_str().expect("an image event links its image");
    let (_format, picture) = download(&app.client, url).await;
    assert!(picture.width() > 0);
    let done = stored.last().unwrap();
    assert_eq!((done.data["state"].as_str(), done.data["imagesDelivered"].as_i64()), (Some("success"), Some(2)));

    // Resuming after the second event replays exactly the rest.
    let mut resumed = SseStream::open(&app.client, &events_url(&app, &id), &app.key, Some("2")).await;
    let rest = resumed.rest().await;
    let expected: Vec<_> = stored.iter().skip(2).map(|e| (e.id.clone(), e.event.clone())).collect();
    assert_eq!(rest.iter().map(|e| (e.id.clone(), e.event.clone())).collect::<Vec<_>>(), expected);
    // After the final one there is nothing more; a bad id is a clear 400.
    let mut after_end =
        SseStream::open(&app.client, &events_url(&app, &id), &app.key, Some(&seqs.len().to_string())).await;
    assert!(after_end.rest().await.is_empty());
    let res =
        app.client.get(events_url(&app, &id)).bearer_auth(&app.key).header("last-event-id", "x").send().await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("Last-Event-ID"), "{body}");
}

#[tokio::test]
async fn a_quiet_stream_sends_heartbeats() {
    let app = spawn_app_with(|c| {
        c.role = Role::Api;
        c.server.event_heartbeat_secs = 1;
    })
    .await;
    let id = app.submit_ok(SEEDREAM, &seedream_t2i(1)).await;
    let mut stream = SseStream::open(&app.client, &events_url(&app, &id), &app.key, None).await;
    let heartbeat = loop {
        match stream.next().await.expect("the stream stays open while the task waits") {
            Frame::Comment(text) => break text,
            Frame::Event(_) => {}
        }
    };
    assert_eq!(heartbeat, "heartbeat");
}

#[tokio::test]
async fn a_stream_on_one_node_follows_a_task_run_on_another_and_resumes_on_a_third() {
    // One worker node and two API nodes on one PostgreSQL database (skipped on SQLite).
    let worker = spawn_app_with(|c| {
        c.role = Role::Worker;
        c.local.latency_ms = 3_000;
    })
    .await;
    let Some(api) = spawn_node(&worker, |c| c.role = Role::Api).await else {
        eprintln!("skipping: several nodes need PostgreSQL (EASEL_TEST_DATABASE=postgres)");
        return;
    };
    let other_api = spawn_node(&worker, |c| c.role = Role::Api).await.unwrap();
    let id = api.submit_ok(SEEDREAM, &seedream_t2i(1)).await;
    let mut stream = SseStream::open(&api.client, &events_url(&api, &id), &api.key, None).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = stream.next_event().await.expect("events before the end");
        if e.id.is_some() {
            seen.push(e);
        }
    }
    assert_eq!(kinds(&seen), ["created", "started", "progress"]);
    // The node serving the stream goes away; the client resumes on another.
    drop(stream);
    api.stop().await;
    let last = seen.last().unwrap().id.clone().unwrap();
    let mut resumed =
        SseStream::open(&other_api.client, &events_url(&other_api, &id), &other_api.key, Some(&last)).await;
    let rest: Vec<_> = resumed.rest().await.into_iter().filter(|e| e.id.is_some()).collect();
    let first_resumed: i64 = rest[0].id.as_ref().unwrap().parse().unwrap();
    assert_eq!(first_resumed, last.parse::<i64>().unwrap() + 1, "nothing missed, nothing repeated");
    assert_eq!(rest.last().unwrap().event, "succeeded");
}
