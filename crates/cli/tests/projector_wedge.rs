//! Issue 17.3: no error class can wedge the projector. An error that is not
//! about a record's data (SQLSTATE classes 22/23) — a statement over a
//! limit, an internal error — used to be retried forever by the one
//! projector task, and every user's reads stopped. Now it is retried a
//! bounded number of times, the record is quarantined and counted, and the
//! projection goes on.

mod common;

use std::time::{Duration, Instant};

use common::{Stack, pipeline};

#[tokio::test]
async fn a_record_postgres_keeps_refusing_with_any_error_is_quarantined_and_reads_go_on() {
    let s = Stack::start().await;
    let t = s.token(8);
    // Postgres fails every write of one workflow's row with a custom
    // SQLSTATE, as it would for a statement over one of its limits.
    let pool = sqlx::PgPool::connect(&s.db_url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.name = 'poison' THEN
                 RAISE EXCEPTION 'poisoned workflow' USING ERRCODE = 'P0001';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON workflows
             FOR EACH ROW EXECUTE FUNCTION poison();",
    )
    .execute(&pool)
    .await
    .unwrap();

    // Its create is in the log; the projection sets it aside after the
    // bounded tries (seconds), so the create's wait for it ends.
    let (_, created) = s
        .req(
            "POST",
            "/workflows/create",
            Some(&t),
            Some(pipeline("poison", &["a"])),
        )
        .await;
    let poison = created["workflow_id"].as_str().map(str::to_owned);

    // Everyone else's workflows are projected and run.
    let began = Instant::now();
    let other = s.create(&t, pipeline("other", &["a", "b"])).await;
    assert_eq!(s.execute(&t, &other).await.0, 202);
    let done = s.wait_done(&t, &other, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(began.elapsed() < Duration::from_secs(30));

    let kept: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, reason FROM quarantined_records ORDER BY log_offset")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].0, "workflow.created");
    assert!(kept[0].1.contains("poisoned workflow"), "{}", kept[0].1);
    if let Some(id) = poison {
        let (st, body) = s
            .req("GET", &format!("/workflows/{id}"), Some(&t), None)
            .await;
        assert_eq!(st, 409, "{body}");
        assert_eq!(body["error"]["code"], "projection_quarantined", "{body}");
    }

    let (_, metrics) = s.req("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(value("agentflow_projector_quarantined_total"), 1.0);
    // Five tries of the batch, five of the record.
    assert!(
        value("agentflow_projector_write_failures_total") >= 5.0,
        "{metrics}"
    );
}
