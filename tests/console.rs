//! The console (issue 22) in a real headless Chromium (Debian's chromium and
//! chromium-driver, over WebDriver) against the real gateway on loopback:
//! - an auditor logs in, finds a case by its number, and sees its deliveries and
//!   timeline; a `<script>` in the record renders as text; the page loads nothing
//!   from any origin but the gateway's;
//! - an operator retries a dead letter and sees it delivered;
//! - an auditor cannot retry: no button, and the POST is refused with 403;
//! - a wrong password is refused and audited, and after 3 the account is locked;
//! - a POST without the CSRF token is refused, and a node's token does not open
//!   the console;
//! - the overview's chart and backlog equal what /metrics says;
//! - an auditor verifies the chain (and finds an altered event), downloads a signed
//!   checkpoint and exports masked;
//! - an operator sees a failing pull source and pauses it; an auditor cannot.
//!
//! Each saves a screenshot for docs/console.md (docs/console/*.png).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::browser::Browser;
use common::*;
use hallgate::receiver::Script;
use serde_json::{Value, json};

const TO_CITY: &str = "[[routes]]\nname = \"r\"\nto = [\"city\"]\n";
const PASSWORD: &str = "审计-correct-horse-7";

fn console_on(t: String) -> String {
    format!("{t}\n[console]\nenabled = true\nlock_after = 3\nlock_minutes = 15\n")
}

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("docs/console/{name}.png"))
}

/// `hallgate users add NAME --role ROLE` with the password on standard input.
fn add_user(h: &Harness, name: &str, role: &str) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hallgate"));
    cmd.arg("--config")
        .arg(h.dir.path().join("hallgate.toml"))
        .args(["users", "add", name, "--role", role]);
    let out = run_with_stdin(cmd, format!("{PASSWORD}\n").as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn login(b: &Browser, h: &Harness, user: &str, password: &str) {
    b.goto(&format!("{}/console/login", h.url)).await;
    b.type_into("input[name=user]", user).await;
    b.type_into("input[name=password]", password).await;
    b.click("button[type=submit]").await;
}

fn audit_details(h: &Harness, event: &str) -> Vec<Value> {
    let db = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).expect("store");
    let mut q = db
        .prepare("SELECT detail FROM audit WHERE event = ?1 ORDER BY seq")
        .expect("query");
    q.query_map([event], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|d| serde_json::from_str(&d.expect("row")).expect("json"))
        .collect()
}

/// Every URL the page loaded is the gateway's.
async fn only_the_gateway(b: &Browser, h: &Harness) {
    let urls = b.loaded_urls().await;
    assert!(
        urls.len() >= 3,
        "the page, its CSS and its script: {urls:?}"
    );
    for u in &urls {
        assert!(u.starts_with(&h.url), "a request to another origin: {u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_finds_a_case_and_sees_deliveries_timeline_and_no_retry() {
    let h = Harness::with_config(TO_CITY, console_on).await;
    add_user(&h, "zhang.shen", "auditor");
    let case = "350205261204009901";
    let mut record = application(case, "350205");
    record["project_name"] =
        json!("<script>window.pwned=1</script>餐饮许可<img src=x onerror=alert(1)>");
    let (s, _, body) = h.post("district-a", &json!([record]), None).await;
    assert_eq!(s, 202, "{body}");
    wait_until(30, "delivered", || h.city.accepted_total() >= 1).await;

    let b = Browser::start().await;
    login(&b, &h, "zhang.shen", PASSWORD).await;
    b.wait_for("投递队列").await;
    assert_eq!(b.url().await, format!("{}/console/", h.url));
    only_the_gateway(&b, &h).await;

    b.goto(&format!("{}/console/cases", h.url)).await;
    b.type_into("input[name=case_no]", case).await;
    b.click("form.search button").await;
    let page = b.wait_for("全程留痕").await;
    assert!(
        page.contains("state-delivered"),
        "the delivery to the city: {page}"
    );
    assert!(
        page.contains("accepted") && page.contains("delivered"),
        "the timeline"
    );
    // Personal data masked, the script shown as text and never run.
    assert!(!page.contains("350205195912280259") && !page.contains("18659201234"));
    assert!(
        !page.contains("林晓东") && page.contains("林**"),
        "names masked"
    );
    let shown = b.text("pre.record").await;
    assert!(shown.contains("<script>window.pwned=1</script>"), "{shown}");
    assert_eq!(
        b.script("return document.querySelectorAll('main script, main img').length;")
            .await,
        json!(0)
    );
    assert_eq!(
        b.script("return window.pwned === undefined;").await,
        json!(true)
    );
    only_the_gateway(&b, &h).await;
    b.screenshot(&shot("case")).await;

    // An auditor reveals the record's personal data, stating why: audited first.
    b.type_into(
        "form.reveal input[name=reason]",
        "核对申请人身份（投诉 2026-118）",
    )
    .await;
    b.click("button.reveal").await;
    let page = b.wait_for("record revealed").await;
    assert!(page.contains("350205195912280259"), "revealed in full");
    let revealed = audit_details(&h, "personal_data_revealed");
    assert_eq!(revealed.len(), 1, "{revealed:?}");
    assert_eq!(revealed[0]["by"], "console user zhang.shen");
    assert_eq!(revealed[0]["reason"], "核对申请人身份（投诉 2026-118）");

    // Found again by who opened it and what it holds, and opened from the list.
    b.goto(&format!(
        "{}/console/cases?node=district-a&kind=application&from=2000-01-01",
        h.url
    ))
    .await;
    b.wait_for("找到 1 件").await;
    b.click("a.case").await;
    b.wait_for("全程留痕").await;

    // An auditor sees deliveries but no retry, and a retry POST is refused.
    h.city.set_script(Script {
        status: 422,
        ..Script::default()
    });
    let (s, _, _) = h
        .post(
            "district-a",
            &json!([application("350205261204009902", "350205")]),
            None,
        )
        .await;
    assert_eq!(s, 202);
    wait_until(30, "a dead letter", || {
        h.count("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 1
    })
    .await;
    b.goto(&format!("{}/console/deliveries?state=dead", h.url))
        .await;
    assert!(b.source().await.contains("state-dead"));
    assert!(
        b.find("button.retry").await.is_none(),
        "an auditor has no retry button"
    );
    let csrf = b
        .script("return document.querySelector('input[name=_csrf]').value;")
        .await
        .as_str()
        .expect("csrf")
        .to_string();
    let session = session_cookie(&b).await;
    let id = h.count("SELECT id FROM deliveries WHERE state = 'dead'");
    let r = post_form(
        &h,
        &session,
        &format!("/console/deliveries/{id}/retry"),
        format!("_csrf={csrf}"),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        h.count("SELECT count(*) FROM deliveries WHERE state = 'dead'"),
        1
    );
    // The login is audited with the person's name.
    let logins = audit_details(&h, "console_login");
    assert!(
        logins
            .iter()
            .any(|d| d["user"] == "zhang.shen" && d["ok"] == json!(true)),
        "{logins:?}"
    );
    b.quit().await;
}

/// POST a form to a console path with a session cookie, as a page would (or
/// would not).
async fn post_form(
    h: &Harness,
    session: &str,
    path: &str,
    body: impl Into<String>,
) -> reqwest::Response {
    h.client
        .post(format!("{}{path}", h.url))
        .header("cookie", format!("hallgate_console={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.into())
        .send()
        .await
        .expect("post")
}

/// The session cookie the browser holds (HttpOnly: not readable by the page).
async fn session_cookie(b: &Browser) -> String {
    b.cookie("hallgate_console").await.expect("session cookie")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_dead_letter_and_sees_it_delivered() {
    let h = Harness::with_config(TO_CITY, console_on).await;
    add_user(&h, "li.yunwei", "operator");
    h.city.set_script(Script {
        status: 422,
        ..Script::default()
    });
    let (s, _, _) = h
        .post(
            "district-a",
            &json!([application("350205261204009903", "350205")]),
            None,
        )
        .await;
    assert_eq!(s, 202);
    wait_until(30, "a dead letter", || {
        h.count("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 1
    })
    .await;
    h.city.set_script(Script::default());

    let b = Browser::start().await;
    login(&b, &h, "li.yunwei", PASSWORD).await;
    b.wait_for("投递队列").await;
    b.goto(&format!("{}/console/deliveries?state=dead", h.url))
        .await;
    b.wait_for("state-dead").await;
    b.screenshot(&shot("deliveries")).await;
    b.click("button.retry").await;
    b.accept_dialog().await;
    b.wait_for("已重新排队 1 条死信").await;
    wait_until(30, "delivered after the retry", || {
        h.city.accepted_total() >= 1
    })
    .await;
    wait_until(10, "marked delivered", || {
        h.count("SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 1
    })
    .await;
    b.goto(&format!("{}/console/deliveries?state=delivered", h.url))
        .await;
    assert!(b.source().await.contains("350205261204009903"));
    // Audited with the person who asked.
    let retried = audit_details(&h, "manually_retried");
    assert!(
        retried.iter().any(|d| d["by"] == "console user li.yunwei"),
        "{retried:?}"
    );

    // Without the CSRF token the same POST is refused.
    let session = session_cookie(&b).await;
    let r = post_form(
        &h,
        &session,
        "/console/deliveries/retry",
        "destination=city",
    )
    .await;
    assert_eq!(r.status(), 403);
    // Only auditors reveal personal data.
    let csrf = b
        .script("return document.querySelector('input[name=_csrf]').value;")
        .await
        .as_str()
        .expect("csrf")
        .to_string();
    let r = post_form(
        &h,
        &session,
        "/console/cases/reveal",
        format!("_csrf={csrf}&case_no=350205261204009903&message_id=x&index=0&reason=curious"),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(audit_details(&h, "personal_data_revealed").is_empty());
    // A login posted from another site's page is refused.
    let r = h
        .client
        .post(format!("{}/console/login", h.url))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("user=li.yunwei&password={PASSWORD}"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    // A node's credentials do not open the console.
    let r = h
        .client
        .get(format!("{}/console/", h.url))
        .header("x-hallgate-node", "district-a")
        .header("authorization", "Bearer not-a-console-session")
        .send()
        .await
        .expect("get");
    assert!(r.url().path().ends_with("/console/login"), "{}", r.url());
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_refused_audited_and_lock_the_account() {
    let h = Harness::with_config(TO_CITY, console_on).await;
    add_user(&h, "wang.jiancha", "auditor");
    let b = Browser::start().await;
    for i in 0..3 {
        login(&b, &h, "wang.jiancha", "not-the-password-1").await;
        let page = b.wait_for("class=\"error\"").await;
        // The third failure locks the account, and says so.
        assert_eq!(page.contains("锁定"), i == 2, "{page}");
    }
    // Locked: even the right password is refused now.
    login(&b, &h, "wang.jiancha", PASSWORD).await;
    b.wait_for("锁定").await;
    assert!(b.url().await.ends_with("/console/login"));
    b.screenshot(&shot("login-locked")).await;
    let refused: Vec<Value> = audit_details(&h, "console_login")
        .into_iter()
        .filter(|d| d["ok"] == json!(false) && d["user"] == "wang.jiancha")
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert_eq!(refused[0]["reason"], "wrong password");
    assert_eq!(refused[3]["reason"], "locked");
    let out = Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(h.dir.path().join("hallgate.toml"))
        .args(["users", "list"])
        .output()
        .expect("users list");
    assert!(String::from_utf8_lossy(&out.stdout).contains("locked until"));
    b.quit().await;
}

/// Sum of every series of a counter or gauge in the Prometheus text.
fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_what_metrics_says() {
    let h = Harness::with_config(
        "[[routes]]\nname = \"r\"\nto = [\"city\", \"province\"]\n",
        console_on,
    )
    .await;
    add_user(&h, "zhao.yunwei", "operator");
    // The province answers 503: its deliveries wait, the city's arrive.
    h.province.set_script(Script {
        status: 503,
        ..Script::default()
    });
    let records: Vec<Value> = (0..12)
        .map(|i| application(&format!("350205261204{:06}", 9100 + i), "350205"))
        .collect();
    let (s, _, _) = h.post("district-a", &json!(records), None).await;
    assert_eq!(s, 202);
    wait_until(30, "the city has all 12", || h.city.accepted_total() >= 12).await;

    let b = Browser::start().await;
    login(&b, &h, "zhao.yunwei", PASSWORD).await;
    b.wait_for("投递队列").await;
    // Other tests of this binary send too: compare when /metrics held still around
    // the page load.
    let mut tries = 0;
    loop {
        tries += 1;
        let before = h.metrics().await;
        b.goto(&format!("{}/console/", h.url)).await;
        let accepted: f64 = b.text("#accepted-total").await.parse().expect("number");
        let delivered: f64 = b.text("#delivered-total").await.parse().expect("number");
        let province_waiting: f64 = b
            .script("return document.querySelector('tbody tr:nth-child(2) td:nth-child(2)').textContent;")
            .await
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("the province's row");
        let after = h.metrics().await;
        let a = metric_sum(&after, "hallgate_records_accepted_total", "");
        let d = metric_sum(&after, "hallgate_deliveries_delivered_total", "");
        let q = metric_sum(&after, "hallgate_queue_depth", "destination=\"province\"");
        if before != after && tries < 20 {
            continue;
        }
        assert_eq!(
            (accepted, delivered),
            (a, d),
            "the chart's totals are /metrics' counters"
        );
        assert_eq!(province_waiting, q, "the backlog is /metrics' queue depth");
        assert!(province_waiting >= 12.0);
        break;
    }
    b.screenshot(&shot("overview")).await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_verifies_the_chain_gets_checkpoints_and_a_masked_export() {
    let h = Harness::with_config(TO_CITY, console_on).await;
    add_user(&h, "qian.shenji", "auditor");
    let (s, _, _) = h
        .post(
            "district-a",
            &json!([application("350205261204009950", "350205")]),
            None,
        )
        .await;
    assert_eq!(s, 202);
    wait_until(30, "delivered", || h.city.accepted_total() >= 1).await;
    let cp_file = h.dir.path().join("cp.json");
    let out = Command::new(env!("CARGO_BIN_EXE_hallgate"))
        .arg("--config")
        .arg(h.dir.path().join("hallgate.toml"))
        .args(["audit", "checkpoint", "--out"])
        .arg(&cp_file)
        .output()
        .expect("checkpoint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let b = Browser::start().await;
    login(&b, &h, "qian.shenji", PASSWORD).await;
    b.wait_for("投递队列").await;
    b.goto(&format!("{}/console/audit", h.url)).await;
    b.click("#verify").await;
    let page = b.wait_for("id=\"verify-result\"").await;
    assert!(page.contains("完整"), "{page}");
    b.screenshot(&shot("audit")).await;

    // The signed checkpoint, as the command wrote it.
    let session = session_cookie(&b).await;
    let get = |path: String| {
        h.client
            .get(format!("{}{path}", h.url))
            .header("cookie", format!("hallgate_console={session}"))
            .send()
    };
    let link = b
        .script("return document.querySelector('a[href^=\"/console/audit/checkpoints/\"]').getAttribute('href');")
        .await;
    let r = get(link.as_str().expect("a checkpoint link").to_string())
        .await
        .expect("download");
    assert_eq!(r.status(), 200);
    let served: Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    let written: Value =
        serde_json::from_slice(&std::fs::read(&cp_file).expect("file")).expect("json");
    assert_eq!(served, written);

    // A masked export, audited with the person.
    let r = get("/console/audit/export?from=2000-01-01&to=2100-01-01&format=jsonl".into())
        .await
        .expect("export");
    assert_eq!(r.status(), 200);
    let text = String::from_utf8(r.bytes().await.expect("body").to_vec()).expect("utf-8");
    assert!(text.lines().count() > 3, "{text}");
    assert!(!text.contains("350205195912280259") && text.contains("350205********0259"));
    let exported = audit_details(&h, "exported");
    assert!(
        exported
            .iter()
            .any(|d| d["by"] == "console user qian.shenji" && d["full"] == json!(false))
    );

    // Altered under the gateway's feet: the verification names the first broken event.
    let db = rusqlite::Connection::open(h.dir.path().join("hallgate.db")).expect("store");
    db.execute(
        "UPDATE audit SET detail = '{\"altered\":true}' WHERE seq = 3",
        [],
    )
    .expect("tamper");
    b.goto(&format!("{}/console/audit", h.url)).await;
    b.click("#verify").await;
    let page = b.wait_for("链断裂").await;
    assert!(page.contains("第一个不符的事件是 3"), "{page}");
    let verified = audit_details(&h, "chain_verified");
    assert_eq!(verified.len(), 2);
    assert_eq!(verified[1]["ok"], json!(false));
    assert_eq!(verified[1]["result"]["broken_seq"], 3);
    assert_eq!(verified[0]["by"], "console user qian.shenji");
    b.quit().await;
}

/// district-a is also pulled, from a list API that refuses connections.
fn console_and_a_failing_pull(t: String) -> String {
    format!(
        "{}\n[nodes.district-a.sync]\npull_url = \"http://127.0.0.1:9/api/cases\"\ncursor = \"timestamp\"\nstart = \"2026-01-01T00:00:00+08:00\"\ninterval_seconds = 1\n",
        console_on(t)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_a_failing_pull_source_and_pauses_it() {
    let h = Harness::with_config(TO_CITY, console_and_a_failing_pull).await;
    add_user(&h, "sun.yunwei", "operator");
    add_user(&h, "zhou.shenji", "auditor");
    let b = Browser::start().await;
    login(&b, &h, "zhou.shenji", PASSWORD).await;
    b.wait_for("投递队列").await;
    b.goto(&format!("{}/console/sync", h.url)).await;
    b.wait_for("district-a").await;
    assert!(
        b.find("button.sync-pause").await.is_none(),
        "auditors do not pause"
    );
    b.click("nav form button").await;
    b.wait_for("name=\"password\"").await;

    login(&b, &h, "sun.yunwei", PASSWORD).await;
    b.wait_for("投递队列").await;
    let started = std::time::Instant::now();
    loop {
        b.goto(&format!("{}/console/sync", h.url)).await;
        if b.source()
            .await
            .to_lowercase()
            .contains("connection refused")
        {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 20,
            "the pull's error never showed: {}",
            b.source().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    b.screenshot(&shot("sync")).await;
    b.click("button.sync-pause").await;
    b.accept_dialog().await;
    b.wait_for("button class=\"sync-resume\"").await;
    let controlled = audit_details(&h, "sync_controlled");
    assert!(
        controlled
            .iter()
            .any(|d| d["action"] == "pause" && d["by"] == "console user sun.yunwei"),
        "{controlled:?}"
    );
    let logouts = audit_details(&h, "console_logout");
    assert!(
        logouts.iter().any(|d| d["user"] == "zhou.shenji"),
        "{logouts:?}"
    );
    b.quit().await;
}

fn console_and_supervision(t: String) -> String {
    console_on(t) + "\n[supervision]\nenabled = true\nsweep_ms = 100\n"
}

fn supervised_app(case_no: &str, accepted: &str, days: i64) -> Value {
    let mut a = application(case_no, "350205");
    a["accepted_at"] = json!(accepted);
    a["promise"] = json!({"value": days, "unit": "workday"});
    a["accept_dept"] = json!({"code": "11350200003602000F", "name": "厦门市规划局"});
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_sees_the_red_and_yellow_lists_and_the_report() {
    let t = |s: &str| hallgate::time::parse_time(s).expect("time");
    let clock = hallgate::time::Clock::manual(t("2026-03-06T10:00:00+08:00"));
    let h = Harness::with_clock(TO_CITY, console_and_supervision, |_| {}, Some(clock)).await;
    add_user(&h, "zhou.shenji", "auditor");
    // Overdue (deadline the end of 5 March), in warning (less than one working day
    // left: the deadline is the end of 6 March), and finished on time.
    let mut red = supervised_app("SV-RED", "2026-03-02T09:00:00+08:00", 3);
    red["item_name"] = json!("<script>alert(1)</script>许可");
    let yellow = supervised_app("SV-YELLOW", "2026-03-04T09:00:00+08:00", 2);
    let done = supervised_app("SV-DONE", "2026-03-02T09:00:00+08:00", 10);
    let mut result = common::result("SV-DONE", "350205");
    result["finished_at"] = json!("2026-03-05T16:00:00+08:00");
    let (status, _, body) = h
        .post("district-a", &json!([red, yellow, done, result]), None)
        .await;
    assert_eq!(status, 202, "{body}");

    let b = Browser::start().await;
    login(&b, &h, "zhou.shenji", PASSWORD).await;
    b.wait_for("投递队列").await;
    let started = std::time::Instant::now();
    loop {
        b.goto(&format!("{}/console/supervision", h.url)).await;
        let src = b.source().await;
        if src.contains("SV-RED") && src.contains("SV-YELLOW") && src.contains("按时率") {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 20,
            "the lists never filled: {src}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let red_list = b.text("h3.sv-red + table").await;
    assert!(
        red_list.contains("SV-RED") && !red_list.contains("SV-YELLOW"),
        "{red_list}"
    );
    // Outside text stays text.
    assert!(
        red_list.contains("<script>alert(1)</script>许可"),
        "{red_list}"
    );
    let yellow_list = b.text("h3.sv-yellow + table").await;
    assert!(yellow_list.contains("SV-YELLOW"), "{yellow_list}");
    // The report: one department, three cases received, one finished on time, one
    // overdue; and its bar.
    let report = b.text("form.filters + svg + table").await;
    assert!(report.contains("厦门市规划局"), "{report}");
    assert!(
        report.contains("3\t1\t1\t100%") || report.contains("3 1 1 100%"),
        "{report}"
    );
    assert!(b.find("svg.sv-chart rect.on-time").await.is_some());
    only_the_gateway(&b, &h).await;
    b.screenshot(&shot("supervision")).await;
    b.quit().await;
}
