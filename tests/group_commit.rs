//! Task writes that wait together commit together (group commit, on SQLite and PostgreSQL),
//! without changing what any one of them does: the credit and concurrency checks still see the
//! writes before them, and a write that fails takes none of the others down with it. Claims, too,
//! take a burst of tasks in one statement.

mod common;

use common::*;
use easel::accounts::limits;
use easel::config::Role;
use easel::ids::AccountId;
use easel::tasks::store::{Admission, Holder, Outcome, StoreError, lease_token};
use easel::tasks::{Dialect, NewTask, TaskState};
use serde_json::json;

/// A text-to-image task of one seedream-5-0 image for `account`.
fn seedream_task(app: &TestApp, account: &AccountId) -> NewTask {
    let model = app.state.catalog.get("seedream-5-0").unwrap();
    let input = json!({"mode": "text-to-image", "prompt": "a group", "max_images": 1});
    let spec = model.parse_apixo_input(&input).unwrap();
    let (tariff, price) = model.tariff_for(&spec).unwrap();
    NewTask {
        account_id: account.clone(),
        dialect: Dialect::Apixo,
        spec,
        param: "{}".into(),
        routing: easel::catalog::Routing::Auto,
        callback_url: None,
        price,
        tariff,
        cancel_after_ms: None,
        callback_events: Default::default(),
    }
}

const NO_LIMITS: Admission<'static> = Admission { timeout_ms: 600_000, max_concurrent: None, idempotency: None };

#[tokio::test]
async fn a_burst_past_the_concurrency_limit_admits_exactly_the_limit() {
    // No workers: every admitted task stays pending, so each counts against the limit.
    let app = spawn_app_with(|c| c.role = Role::Api).await;
    let account = app.state.accounts.find("default").await.unwrap();
    limits::set(&app.state.db, &account.id, "seedream-5-0", Some(1000), Some(7)).await.unwrap();
    let body = json!({"input": {"mode": "text-to-image", "prompt": "burst", "max_images": 1}});
    let answers = futures::future::join_all((0..25).map(|_| app.submit("seedream-5-0", &body))).await;
    let admitted = answers.iter().filter(|(status, _)| *status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|(status, _)| *status == 429).collect();
    assert_eq!(admitted, 7, "{answers:?}");
    assert_eq!(refused.len(), 18, "{answers:?}");
    for (_, json) in refused {
        assert!(json["message"].as_str().unwrap().contains("concurrency limit reached: 7"), "{json}");
    }
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!(account.held.0, 7 * 32_000, "only the admitted tasks hold credits");
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn a_finish_that_fails_fails_alone() {
    let app = spawn_app_with(|c| c.role = Role::Api).await;
    let store = &app.state.tasks;
    let account = app.state.accounts.find("default").await.unwrap();
    let first = store.create(&seedream_task(&app, &account.id), &NO_LIMITS).await.unwrap();
    let token = lease_token("test");
    let task = store.claim(&token, 60_000, &[], 1).await.unwrap().pop().expect("the task is pending");
    assert_eq!(task.id, first);
    // A settle row already on record: finishing the task must fail on the ledger's
    // once-per-task rule instead of paying twice.
    sqlx::query(
        "INSERT INTO ledger (id, account_id, task_id, kind, amount_micros, created_at) \
         VALUES ('stray', $1, $2, 'settle', 0, 0)",
    )
    .bind(account.id.as_str())
    .bind(first.as_str())
    .execute(&app.state.db.write)
    .await
    .unwrap();

    // Both writes reach the queue before the writer runs (this test's runtime has one thread),
    // so they share a group.
    let second = seedream_task(&app, &account.id);
    let outcome = Outcome::Success { result_keys: vec!["results/x/0.png".into()], images: vec![] };
    let holder = Holder::Lease(token.clone());
    let (finished, created) = tokio::join!(store.finish(&task, &holder, &outcome), store.create(&second, &NO_LIMITS),);
    assert!(matches!(finished, Err(StoreError::Db(_))), "{finished:?}");
    let created = created.expect("the other write of the group commits");
    let stored = store.get(&created).await.unwrap().expect("the new task is stored");
    assert_eq!(stored.state, TaskState::Pending);
    let first = store.get(&first).await.unwrap().unwrap();
    assert_eq!(first.state, TaskState::Processing, "the failed finish changed nothing");
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!(account.held.0, 2 * 32_000, "both holds stand");
}

#[tokio::test]
async fn writes_of_one_group_see_each_other() {
    let app = spawn_app_with(|c| c.role = Role::Api).await;
    let store = &app.state.tasks;
    let account = app.state.accounts.find("default").await.unwrap();
    // Credit for exactly three tasks of 32,000 micro-dollars.
    let spare = account.balance.0 - 3 * 32_000;
    sqlx::query("UPDATE accounts SET balance_micros = balance_micros - $1 WHERE id = $2")
        .bind(spare)
        .bind(account.id.as_str())
        .execute(&app.state.db.write)
        .await
        .unwrap();
    let tasks: Vec<NewTask> = (0..5).map(|_| seedream_task(&app, &account.id)).collect();
    let outcomes = futures::future::join_all(tasks.iter().map(|t| store.create(t, &NO_LIMITS))).await;
    let admitted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(admitted, 3, "{outcomes:?}");
    assert!(outcomes.iter().filter(|o| o.is_err()).all(|o| matches!(o, Err(StoreError::InsufficientCredits))));
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!((account.balance.0, account.held.0), (0, 3 * 32_000));
}

#[tokio::test]
async fn a_claim_takes_the_oldest_tasks_up_to_its_limit_and_a_requeue_puts_back_only_its_own() {
    let app = spawn_app_with(|c| c.role = Role::Api).await;
    let store = &app.state.tasks;
    let account = app.state.accounts.find("default").await.unwrap();
    let mut ids = Vec::new();
    for age in 0..5 {
        let id = store.create(&seedream_task(&app, &account.id), &NO_LIMITS).await.unwrap();
        // Distinct creation times, oldest first, whatever the clock's resolution.
        sqlx::query("UPDATE tasks SET created_at = $1 WHERE id = $2")
            .bind(1_000 + age)
            .bind(id.as_str())
            .execute(&app.state.db.write)
            .await
            .unwrap();
        ids.push(id);
    }
    let (first, second) = (lease_token("first"), lease_token("second"));
    let claimed = store.claim(&first, 60_000, &[], 3).await.unwrap();
    let claimed_ids: Vec<_> = claimed.iter().map(|t| t.id.clone()).collect();
    assert_eq!(claimed_ids, ids[..3], "the three oldest, oldest first");
    assert!(claimed.iter().all(|t| t.state == TaskState::Processing && t.attempts == 1), "{claimed:?}");
    let rest = store.claim(&second, 60_000, &[], 3).await.unwrap();
    assert_eq!(rest.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), ids[3..], "what is left, no more");
    assert!(store.claim(&second, 60_000, &[], 3).await.unwrap().is_empty());

    // A requeue under the first token puts back the first task but not the second claim's.
    store.requeue(&[&ids[0], &ids[4]], &first).await.unwrap();
    let put_back = store.get(&ids[0]).await.unwrap().unwrap();
    assert_eq!((put_back.state, put_back.attempts), (TaskState::Pending, 0));
    assert_eq!(store.get(&ids[4]).await.unwrap().unwrap().state, TaskState::Processing);
    let again = store.claim(&second, 60_000, &[], 10).await.unwrap();
    assert_eq!(again.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), ids[..1]);
    assert_eq!(again[0].interruptions, 0, "a requeued claim was no interruption");
}

#[tokio::test]
async fn a_group_holds_and_settles_many_tasks_of_one_account_with_a_line_each() {
    let app = spawn_app_with(|c| c.role = Role::Api).await;
    let store = &app.state.tasks;
    let account = app.state.accounts.find("default").await.unwrap();
    // Six creates of one account and model, all affordable: held together, each with its hold.
    let tasks: Vec<NewTask> = (0..6).map(|_| seedream_task(&app, &account.id)).collect();
    let created = futures::future::join_all(tasks.iter().map(|t| store.create(t, &NO_LIMITS))).await;
    let ids: Vec<_> = created.into_iter().map(|c| c.expect("every create fits")).collect();
    let after = app.state.accounts.find("default").await.unwrap();
    assert_eq!((account.balance.0 - after.balance.0, after.held.0), (6 * 32_000, 6 * 32_000));
    let holds: Vec<(String,)> =
        sqlx::query_as("SELECT task_id FROM ledger WHERE kind = 'hold' AND account_id = $1 ORDER BY task_id")
            .bind(account.id.as_str())
            .fetch_all(&app.state.db.read)
            .await
            .unwrap();
    let mut expected: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    expected.sort();
    assert_eq!(holds.into_iter().map(|(id,)| id).collect::<Vec<_>>(), expected);

    // Their ends in one group add up in one usage row of the day and model.
    let token = lease_token("test");
    let claimed = store.claim(&token, 60_000, &[], 6).await.unwrap();
    assert_eq!(claimed.len(), 6);
    let holder = Holder::Lease(token.clone());
    let outcome = Outcome::Success { result_keys: vec!["results/x/0.png".into()], images: vec![] };
    let finished = futures::future::join_all(claimed.iter().map(|t| store.finish(t, &holder, &outcome))).await;
    assert!(finished.iter().all(|f| matches!(f, Ok(true))), "{finished:?}");
    let (succeeded, images, spent): (i64, i64, i64) = sqlx::query_as(
        "SELECT CAST(SUM(succeeded) AS BIGINT), CAST(SUM(images) AS BIGINT), CAST(SUM(spent_micros) AS BIGINT) \
         FROM usage_daily WHERE account_id = $1 AND model = 'seedream-5-0'",
    )
    .bind(account.id.as_str())
    .fetch_one(&app.state.db.read)
    .await
    .unwrap();
    assert_eq!((succeeded, images, spent), (6, 6, 6 * 32_000));
    let settled = app.state.accounts.find("default").await.unwrap();
    assert_eq!((account.balance.0 - settled.balance.0, settled.held.0), (6 * 32_000, 0));
    assert_ledger_invariant(&app.state, "default").await;
}
