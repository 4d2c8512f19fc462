//! Web access end to end with a real browser: Debian's Chromium, headless,
//! visits a page served on loopback (its host names mapped to 127.0.0.1);
//! the agent reads the visit from Chromium's own history database, the
//! visit is logged (host only, by default) and alarmed. The policy's block
//! list reaches Chromium as its managed policy (`URLBlocklist`), written by
//! the agent: a blocked host is refused by the browser itself. Chromium
//! runs in a mount namespace of its own where the test's policy directory
//! is `/etc/chromium` (the tests run as root).

use crate::gw::Gw;
use crate::policy_alarms::{alarms, alerting_config, enroll_agent, run_agent, set_tenant_policy};
use crate::support::*;
use mamori_agent::{CollectorSet, RunOptions};
use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A web server on loopback that answers every request with a small page
/// titled `title` and remembers each request's Host header.
fn serve(title: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&hosts);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Some(host) = request.lines().find_map(|l| {
                l.strip_prefix("Host: ")
                    .or_else(|| l.strip_prefix("host: "))
            }) {
                seen.lock().unwrap().push(host.trim().to_owned());
            }
            let body = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>ok</body></html>"
            );
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hosts)
}

/// Headless Chromium with `profile` as its user data, `etc` as its
/// `/etc/chromium`, opening `url`; returns what it logged.
fn chromium(etc: &Path, profile: &Path, url: &str) -> String {
    let script = format!(
        "mount --bind '{}' /etc/chromium && exec {CHROMIUM} --headless --no-sandbox --disable-gpu \
         --disable-background-networking --disable-component-update --disable-sync \
         --no-first-run --user-data-dir='{}' --host-resolver-rules='MAP *.example 127.0.0.1' \
         --dump-dom '{url}'",
        etc.display(),
        profile.display()
    );
    let out = Command::new("unshare")
        .arg("-m")
        .arg("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_in_a_real_chromium_is_logged_and_alarmed_and_a_blocked_host_is_refused() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)"
    );
    assert!(
        Path::new("/etc/chromium").is_dir(),
        "/etc/chromium is missing (Debian's chromium package makes it)"
    );
    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    let admin = gw.signup("Web KK", "tenant").await;
    set_tenant_policy(
        &gw,
        &admin,
        json!({"web": {"block": ["p2p.example"], "alarm": ["intranet.example"]}}),
    )
    .await;
    let (port, hosts) = serve("社内ポータル");

    let work = tempfile::tempdir().unwrap();
    let homes = work.path().join("home");
    let profile = homes.join("sato/.config/chromium");
    std::fs::create_dir_all(&profile).unwrap();
    let etc = work.path().join("etc-chromium");
    std::fs::create_dir_all(&etc).unwrap();
    let managed = etc.join("policies/managed");

    let state = tempfile::tempdir().unwrap();
    enroll_agent(&gw, &admin, state.path(), "web-test").await;
    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "web".parse::<CollectorSet>().unwrap();
    opts.browser_homes = vec![homes.clone()];
    opts.web_poll = Duration::from_millis(500);
    opts.chromium_policy_dirs = vec![managed.clone()];
    opts.firefox_policy_dirs = Vec::new();
    let (stop_tx, agent) = run_agent(opts);

    // The block list arrives as Chromium's managed policy.
    let policy = wait_for("the managed policy", Duration::from_secs(30), || async {
        std::fs::read_to_string(managed.join("mamori.json")).ok()
    })
    .await;
    let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(policy["URLBlocklist"], json!(["p2p.example"]));
    // The agent's first look is done (it keeps its place after it).
    wait_for(
        "the web collector's first look",
        Duration::from_secs(30),
        || async { state.path().join("web/web.json").exists().then_some(()) },
    )
    .await;

    let log = chromium(
        &etc,
        &profile,
        &format!("http://intranet.example:{port}/hr"),
    );
    assert!(log.contains("<title>社内ポータル</title>"), "{log}");
    let events = wait_for("the web event", Duration::from_secs(60), || async {
        let (_, v) = gw.get(&admin, "/api/v1/events?kind=web_access").await;
        let e = v["events"].as_array().cloned().unwrap_or_default();
        (!e.is_empty()).then_some(e)
    })
    .await;
    let web = &events[0]["detail"]["web"];
    assert_eq!(events[0]["subject"], "intranet.example", "{}", events[0]);
    assert_eq!(web["title"], "社内ポータル");
    assert_eq!(web["browser"], "chromium");
    assert!(web.get("url").is_none(), "the host only, by default: {web}");
    assert_eq!(events[0]["os_user"], "root", "the home's owner");
    let alarm = wait_for("the web alarm", Duration::from_secs(30), || async {
        alarms(&gw, &admin)
            .await
            .into_iter()
            .find(|a| a["category"] == "banned_web")
    })
    .await;
    assert!(
        alarm["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("intranet.example"),
        "{alarm}"
    );

    // The blocked host: Chromium refuses it and never asks the server.
    let log = chromium(&etc, &profile, &format!("http://p2p.example:{port}/"));
    assert!(log.contains("ERR_BLOCKED_BY_ADMINISTRATOR"), "{log}");
    assert!(
        !hosts
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with("p2p.example")),
        "{:?}",
        hosts.lock().unwrap()
    );
    // Without the block list the policy file goes, and the host loads.
    set_tenant_policy(&gw, &admin, json!({"web": {"alarm": ["intranet.example"]}})).await;
    wait_for(
        "the managed policy removed",
        Duration::from_secs(30),
        || async { (!managed.join("mamori.json").exists()).then_some(()) },
    )
    .await;
    let log = chromium(&etc, &profile, &format!("http://p2p.example:{port}/"));
    assert!(log.contains("社内ポータル"), "{log}");

    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
    alerting.shutdown().await;
}
