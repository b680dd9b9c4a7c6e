//! The audit log through the API: a submit, a refused cancel and a refused token are
//! recorded with who, tenant, what, when and the outcome, kept in the coordinator's state;
//! a tenant's admins read their tenant's records only, and no one else reads any.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xt_api::auth::{Role, mint};
use xt_testkit::{Proc, scratch};

const SECRET: &str = "audit-test-secret-0123456789-abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_and_refused_tokens_are_audited_per_tenant() {
    let state = scratch("audit");
    let (_coordinator, url) = xt_testkit::coordinator(&state, "127.0.0.1:0", &[]);
    let _worker = Proc(
        Command::new(xt_testkit::bin("xt-worker"))
            .args(["--coordinator", &url, "--slots", "1"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (_api, addrs) = xt_testkit::start(
        Path::new(env!("CARGO_BIN_EXE_xt")),
        &["serve", "--coordinator", &url, "--listen", "127.0.0.1:0"],
        &[("XT_JWT_SECRET", SECRET)],
        &["listening on "],
    );
    let api = format!("http://{}", addrs[0]);
    let token = |sub: &str, tenant: &str, role: Role| {
        mint(SECRET.as_bytes(), sub, tenant, &[role], 3600).unwrap()
    };
    let (ann, bob) = (
        token("ann", "desk-a", Role::Researcher),
        token("bob", "desk-a", Role::Researcher),
    );
    let (admin_a, admin_b) = (
        token("root-a", "desk-a", Role::Admin),
        token("root-b", "desk-b", Role::Admin),
    );
    let http = reqwest::Client::new();

    let spec = json!({"data": "synthetic://?symbols=2&years=1&seed=3", "strategy": "macd"});
    let r = http
        .post(format!("{api}/v1/batches"))
        .bearer_auth(&ann)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    // Bob may not cancel Ann's batch; a forged token is refused.
    let r = http
        .delete(format!("{api}/v1/batches/{id}"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{api}/v1/batches"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Records are sent as requests are answered: read until both of desk-a's are there.
    let read = |t: String| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let r = http
                .get(format!("{api}/v1/audit"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let (status, body) = read(admin_a.clone()).await;
        assert_eq!(status, 200, "{body}");
        let records = body["records"].as_array().unwrap().clone();
        if records.len() >= 2 {
            break records;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(records.len(), 2, "{records:?}");
    // Newest first.
    let (cancel, submit) = (&records[0], &records[1]);
    assert_eq!(
        (&submit["action"], &submit["who"], &submit["tenant"]),
        (&json!("submit"), &json!("ann"), &json!("desk-a"))
    );
    assert_eq!(
        (&submit["batch"], &submit["status"]),
        (&json!(id), &json!(202))
    );
    assert_eq!(submit["outcome"], "ok");
    assert!(submit["at"].as_str().unwrap().ends_with('Z'), "{submit}");
    assert_eq!(
        (
            &cancel["action"],
            &cancel["who"],
            &cancel["batch"],
            &cancel["status"]
        ),
        (&json!("cancel"), &json!("bob"), &json!(id), &json!(403))
    );
    assert!(
        cancel["outcome"]
            .as_str()
            .unwrap()
            .starts_with("forbidden: "),
        "{cancel}"
    );
    // Another tenant's admin sees none of them; a researcher reads no log.
    let (status, body) = read(admin_b.clone()).await;
    assert_eq!(
        (status, body["records"].as_array().unwrap().len()),
        (200, 0)
    );
    assert_eq!(read(ann.clone()).await.0, 403);
    // The refused token names no tenant: it is in the log kept with the state, for the
    // operator.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(state.join("batches/audit.jsonl")).unwrap_or_default();
        let refused: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["action"] == "token_refused")
            .collect();
        if let Some(r) = refused.first() {
            assert_eq!(
                (&r["who"], &r["status"]),
                (&Value::Null, &json!(401)),
                "{r}"
            );
            assert_eq!(r["path"], "/v1/batches");
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A finished batch's results: deleted by its tenant's admin only, and audited.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .get(format!("{api}/v1/batches/{id}"))
            .bearer_auth(&ann)
            .send()
            .await
            .unwrap();
        if r.json::<Value>().await.unwrap()["state"] != "running" {
            break;
        }
        assert!(Instant::now() < deadline, "batch {id} did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delete = |t: String| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            http.delete(format!("{api}/v1/batches/{id}/results"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        delete(ann.clone()).await,
        403,
        "a researcher deletes nothing"
    );
    assert_eq!(
        delete(token("carl", "desk-b", Role::Researcher)).await,
        404,
        "another tenant sees no batch"
    );
    assert_eq!(delete(admin_a.clone()).await, 204);
    let r = http
        .get(format!("{api}/v1/batches/{id}"))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "gone");
    assert!(
        !state.join(format!("batches/{id}")).exists(),
        "nothing of it is left in the state"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = read(admin_a.clone()).await;
        let deleted: Vec<&Value> = body["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "delete" && r["status"] == 204)
            .collect();
        if let Some(r) = deleted.first() {
            assert_eq!(
                (&r["who"], &r["batch"]),
                (&json!("root-a"), &json!(id)),
                "{r}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
