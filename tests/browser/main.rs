//! The dashboard in a real browser: Debian's Chromium, headless, driven through ChromeDriver
//! (WebDriver) while the CLI and a worker use the same database.
//!
//! One browser serves every scenario, one after another, so that a machine with two cores
//! runs one Chromium at a time. Conditions in the page are awaited with a `MutationObserver`
//! (an event), never with sleeps. Every page is checked with axe-core (`npm ci` in
//! `tests/browser` installs it): no serious or critical accessibility violation.
//!
//! Without `/usr/bin/chromium`, `/usr/bin/chromedriver` or axe-core the test says so and
//! passes, unless `ABATHUR_REQUIRE_BROWSER` is set, as in CI, where it fails. With
//! `ABATHUR_SCREENSHOTS=DIR` it saves a screenshot of each page there (docs/DASHBOARD.md shows
//! them).

#[path = "../serve/server.rs"]
#[allow(dead_code)]
mod server;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use server::{Served, Store, PATIENCE};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn axe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/axe-core/axe.min.js")
}

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    for path in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(path).exists() {
            return Some(format!(
                "{path} is missing (apt-get install chromium chromium-driver)"
            ));
        }
    }
    let axe = axe_path();
    (!axe.exists()).then(|| format!("{} is missing (npm ci in tests/browser)", axe.display()))
}

/// ChromeDriver on a port of its own, and a browser session through it.
struct Browser {
    driver: Child,
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().unwrap().port()
        };
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        loop {
            let line = tokio::time::timeout(PATIENCE, lines.next_line())
                .await
                .expect("chromedriver starts in time")
                .expect("stdout")
                .expect("chromedriver says it started before it exits");
            if line.contains("started successfully") {
                break;
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = tempfile::tempdir().expect("a profile folder");
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a browser session");
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(PATIENCE),
                Some(PATIENCE),
                Some(Duration::ZERO),
            ))
            .await
            .expect("timeouts");
        Self {
            driver,
            client,
            _profile: profile,
        }
    }

    async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }

    async fn open(&self, served: &Served, route: &str) {
        self.client
            .goto(&served.url(&format!("/{route}")))
            .await
            .expect("the page loads");
    }

    /// Waits until an element matching `selector` holds `text`, as the page changes.
    async fn wait_for_text(&self, selector: &str, text: &str) {
        let script = r#"
            const [selector, text, done] = arguments;
            const found = () => [...document.querySelectorAll(selector)]
                .some((el) => el.textContent.includes(text));
            if (found()) { done(true); return; }
            const observer = new MutationObserver(() => {
                if (found()) { observer.disconnect(); done(true); }
            });
            observer.observe(document.documentElement,
                { subtree: true, childList: true, characterData: true, attributes: true });
        "#;
        // A page that is being left (a form posted) ends the script early: wait again on the
        // page that follows, a few times.
        let started = std::time::Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .client
                .execute_async(script, vec![json!(selector), json!(text)])
                .await
            {
                Ok(done) => {
                    assert_eq!(done, json!(true));
                    return;
                }
                Err(e) if attempts < 5 && started.elapsed() < PATIENCE => {
                    eprintln!("waiting for {selector} again, after: {e}");
                }
                Err(e) => panic!("{selector} never held {text:?}: {e}"),
            }
        }
    }

    /// Clicks the element `selector` finds. A live update may draw the page again between
    /// finding the element and clicking it; then the new one is found and clicked.
    async fn click(&self, selector: &str) {
        for _ in 0..5 {
            let element = self
                .client
                .find(Locator::Css(selector))
                .await
                .unwrap_or_else(|e| panic!("no {selector}: {e}"));
            match element.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
                Err(e) => panic!("a click on {selector}: {e}"),
            }
        }
        panic!("{selector} was drawn again at every click");
    }

    /// Runs axe-core on the page as it is; panics on a serious or critical violation.
    async fn check_accessibility(&self, page: &str) {
        let axe = std::fs::read_to_string(axe_path()).expect("axe-core");
        self.client.execute(&axe, vec![]).await.expect("axe loads");
        let result = self
            .client
            .execute_async(
                "const done = arguments[0];
                 axe.run(document, { resultTypes: ['violations'] })
                    .then((r) => done(r.violations.map((v) => ({
                        id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map((n) => n.html).slice(0, 3) }))))
                    .catch((e) => done({ error: String(e) }));",
                vec![],
            )
            .await
            .expect("axe runs");
        let violations = result
            .as_array()
            .unwrap_or_else(|| panic!("axe failed: {result}"));
        let serious: Vec<&Value> = violations
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(
            serious.is_empty(),
            "{page}: accessibility violations: {}",
            serde_json::to_string_pretty(&serious).unwrap()
        );
    }

    async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("ABATHUR_SCREENSHOTS") else {
            return;
        };
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(&dir).expect("the screenshot folder");
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).expect("saved");
    }
}

#[tokio::test]
async fn the_dashboard_in_a_real_browser() {
    if let Some(reason) = missing() {
        assert!(
            std::env::var_os("ABATHUR_REQUIRE_BROWSER").is_none(),
            "the browser test must run here, but {reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let store = Store::new();
    let fetch = store.submit("fetch the sources", &[]);
    let build = store.submit("build the library", &[&fetch]);
    let served = store.serve(&[]).await;
    let browser = Browser::start().await;

    // A task submitted by the CLI appears, on the overview and in the list.
    browser.open(&served, "#/").await;
    browser.wait_for_text("#main h1", "Overview").await;
    browser.wait_for_text("#main", "fetch the sources").await;
    browser.check_accessibility("overview").await;
    browser.screenshot("overview").await;

    browser.open(&served, "#/tasks").await;
    browser
        .wait_for_text("table.tasks", "build the library")
        .await;
    browser.check_accessibility("tasks").await;
    browser.screenshot("tasks").await;

    browser.open(&served, &format!("#/task/{build}")).await;
    browser.wait_for_text("#main h1", "build the library").await;
    browser.check_accessibility("task detail").await;
    browser.screenshot("task").await;

    // Cancelling through the dialog: it says what the action reaches, and the CLI then reads
    // both tasks cancelled.
    browser.open(&served, &format!("#/task/{fetch}")).await;
    browser.wait_for_text(".actions button", "Cancel").await;
    browser.click(".actions button.danger").await;
    browser
        .wait_for_text(
            "#confirm-text",
            "This cancels 1 task and 1 unfinished task that waits for it or is its child",
        )
        .await;
    browser.check_accessibility("cancel dialog").await;
    browser.screenshot("cancel-dialog").await;
    browser.click("#confirm-yes").await;
    browser.wait_for_text(".outcome", "Cancelled 2 tasks").await;
    assert_eq!(store.show(&fetch)["status"], "cancelled");
    assert_eq!(store.show(&build)["status"], "cancelled");

    // A worker's completion appears live, without a reload.
    let run = store.submit("run by a worker", &[]);
    browser.open(&served, &format!("#/task/{run}")).await;
    browser.wait_for_text("#main .status", "ready").await;
    browser
        .client
        .execute("window.stillTheSamePage = true;", vec![])
        .await
        .unwrap();
    store.cli(&["worker", "--once", "--concurrency", "1", "--", "true"]);
    browser.wait_for_text("#main dd .status", "completed").await;
    let same = browser
        .client
        .execute("return window.stillTheSamePage === true;", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(true), "the page was reloaded");

    // The DAG view draws one node per task and one line per dependency, and each node leads
    // to its task.
    let root = store.submit("plan the release", &[]);
    let left = store.submit("write the notes", &[&root]);
    let right = store.submit("tag the commit", &[&root]);
    let last = store.submit("publish", &[&left, &right]);
    browser.open(&served, &format!("#/dag?task={root}")).await;
    browser
        .wait_for_text("#main h1", "DAG: plan the release")
        .await;
    let drawn = browser
        .client
        .execute(
            "return [document.querySelectorAll('svg a.node').length,
                     document.querySelectorAll('svg path.edge').length,
                     [...document.querySelectorAll('svg a.node')].map((a) => a.getAttribute('href'))];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(drawn[0], json!(4), "{drawn}");
    assert_eq!(drawn[1], json!(4), "{drawn}");
    for id in [&root, &left, &right, &last] {
        let href = json!(format!("#/task/{id}"));
        assert!(
            drawn[2].as_array().unwrap().contains(&href),
            "{id}: {drawn}"
        );
    }
    browser.check_accessibility("dag").await;
    browser.screenshot("dag").await;
    browser
        .click(&format!("svg a.node[href='#/task/{last}']"))
        .await;
    browser.wait_for_text("#main h1", "publish").await;

    // A DAG of 500 tasks stays readable: 499 in layers of 10, each waiting for two of the
    // layer before, and a last one waiting for the last layer, so every task is an ancestor of
    // the last. Every task is drawn as a box of its own, none overlaps another, and the labels
    // keep their size (the graph scrolls rather than shrinks).
    let lines: Vec<String> = (0..500)
        .map(|i| {
            let (layer, k) = (i / 10, i % 10);
            let deps = if i == 499 {
                json!((490..499).map(|j| format!("n{j}")).collect::<Vec<_>>())
            } else if layer == 0 {
                json!([])
            } else {
                let before = (layer - 1) * 10;
                json!([
                    format!("n{}", before + k),
                    format!("n{}", before + (k + 1) % 10)
                ])
            };
            json!({"key": format!("n{i}"), "summary": format!("step {i}"),
                   "description": "a step", "depends_on": deps})
            .to_string()
        })
        .collect();
    let file = store.path().with_file_name("dag.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let imported = store.cli(&["--json", "task", "import", file.to_str().unwrap()]);
    let imported: Value = serde_json::from_str(&imported).expect("JSON");
    let end = imported[499]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no task 500 in {imported}"))
        .to_string();
    browser.open(&served, &format!("#/dag?task={end}")).await;
    browser.wait_for_text("#main h1", "DAG: step 499").await;
    let drawn = browser
        .client
        .execute(
            "const boxes = [...document.querySelectorAll('svg a.node rect')]
                 .map((r) => r.getBBox());
             let overlaps = 0;
             for (let i = 0; i < boxes.length; i++) {
               for (let j = i + 1; j < boxes.length; j++) {
                 const a = boxes[i], b = boxes[j];
                 if (a.x < b.x + b.width && b.x < a.x + a.width &&
                     a.y < b.y + b.height && b.y < a.y + a.height) overlaps++;
               }
             }
             const text = document.querySelector('svg a.node text');
             return [boxes.length, overlaps,
                     parseFloat(getComputedStyle(text).fontSize),
                     text.getBoundingClientRect().height > 10];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(drawn[0], json!(500), "{drawn}");
    assert_eq!(drawn[1], json!(0), "{drawn}");
    assert_eq!(drawn[2].as_f64(), Some(12.0), "{drawn}");
    assert_eq!(drawn[3], json!(true), "{drawn}");
    browser.screenshot("dag-500").await;

    // The agent registry.
    store.cli(&["agent", "register", "--type", "planner"]);
    browser.open(&served, "#/agents").await;
    browser.wait_for_text("#main table", "planner").await;
    browser.check_accessibility("agents").await;
    browser.screenshot("agents").await;

    // Several tasks at once: ticked in the list, cancelled through the dialog.
    let one = store.submit("bulk one", &[]);
    let two = store.submit("bulk two", &[]);
    browser.open(&served, "#/tasks?q=bulk").await;
    browser.wait_for_text("table.tasks", "bulk two").await;
    for summary in ["bulk one", "bulk two"] {
        browser
            .click(&format!("input[aria-label='Select “{summary}”']"))
            .await;
    }
    browser.click(".actions button.danger").await;
    browser
        .wait_for_text(
            "#confirm-text",
            "This cancels 2 tasks and 0 unfinished tasks",
        )
        .await;
    browser.click("#confirm-yes").await;
    browser
        .wait_for_text("#main .done", "Cancelled 2 tasks")
        .await;
    assert_eq!(store.show(&one)["status"], "cancelled");
    assert_eq!(store.show(&two)["status"], "cancelled");

    // What the agents learned, version by version, and a session's log.
    store.cli(&[
        "memory",
        "add",
        "team/rust",
        "style",
        r#"{"indent": 4, "width": 100}"#,
    ]);
    store.cli(&[
        "memory",
        "update",
        "team/rust",
        "style",
        r#"{"indent": 2, "width": 100}"#,
    ]);
    browser.open(&served, "#/memory").await;
    browser.wait_for_text("#main table", "style").await;
    browser.check_accessibility("memory").await;
    browser.screenshot("memory").await;
    browser.click("#main table a").await;
    browser
        .wait_for_text("pre.diff .added", "\"indent\": 2")
        .await;
    browser
        .wait_for_text("pre.diff .removed", "\"indent\": 4")
        .await;
    browser.check_accessibility("memory versions").await;
    browser.screenshot("memory-versions").await;
    let session = store.cli(&["session", "create", "--app", "planner", "--user", "ada"]);
    store.cli(&[
        "session",
        "append",
        &session,
        "--type",
        "message",
        "--content",
        r#"{"text": "hello"}"#,
    ]);
    browser.open(&served, &format!("#/session/{session}")).await;
    browser.wait_for_text("#main .timeline", "message").await;
    browser.check_accessibility("session").await;
    browser.screenshot("session").await;

    // With a token, a browser signs in through the form and is let in; a wrong token is
    // refused on the page.
    served.stop().await;
    let mut cmd = store.serve_command(&["--listen", "127.0.0.1:0"]);
    cmd.env("ABATHUR_TOKEN", "correct-horse-battery-staple");
    let guarded = Served::start(cmd).await;
    browser.open(&guarded, "").await;
    browser.wait_for_text("main.login label", "token").await;
    browser.check_accessibility("sign-in").await;
    browser.screenshot("login").await;
    for (token, expect) in [
        (
            "wrong-token-wrong-token",
            "That is not this server's token.",
        ),
        ("correct-horse-battery-staple", "Overview"),
    ] {
        let field = browser.client.find(Locator::Css("#token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        // (The sign-in page has no live updates: the field stays the one found.)
        browser.click("main.login button").await;
        browser.wait_for_text("main", expect).await;
    }
    browser.wait_for_text("#live-state", "live").await;

    browser.stop().await;
    guarded.stop().await;
}
