//! Printing, end to end: a real cupsd (Debian's `cups-daemon`, started by
//! the test on loopback with its own directories) with a virtual printer
//! (the CUPS-PDF driver, output to /dev/null), a 60-page document printed
//! with `lp`, the agent's print collector reading that cupsd's page log,
//! and the mass-printing alarm.

use crate::gw::Gw;
use crate::policy_alarms::{alarms, alerting_config, enroll_agent, run_agent, set_tenant_policy};
use crate::support::*;
use mamori_agent::{CollectorSet, RunOptions};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const PPD: &str = "/usr/share/ppd/cups-pdf/CUPS-PDF_opt.ppd";

/// A private cupsd on a free loopback port, stopped when dropped.
struct Cupsd {
    dir: tempfile::TempDir,
    server: String,
    child: Child,
}

impl Cupsd {
    fn start() -> Cupsd {
        for tool in ["/usr/sbin/cupsd", "/usr/sbin/lpadmin", "/usr/bin/lp", PPD] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: apt-get install cups-daemon cups-client printer-driver-cups-pdf (scripts/test.sh does)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // cupsd runs its filters as `lp`: they need to reach the spool and
        // write their temporary files.
        set_mode(root, 0o755);
        for sub in ["spool", "cache", "state", "log"] {
            std::fs::create_dir(root.join(sub)).unwrap();
            set_mode(&root.join(sub), 0o755);
        }
        std::fs::create_dir(root.join("tmp")).unwrap();
        set_mode(&root.join("tmp"), 0o1777);
        let port = free_port();
        std::fs::write(
            root.join("cupsd.conf"),
            format!(
                "Listen 127.0.0.1:{port}\nLogLevel info\nWebInterface No\nBrowsing No\nDefaultAuthType None\n\
                 <Location />\n  Order allow,deny\n  Allow from 127.0.0.1\n</Location>\n\
                 <Location /admin>\n  Order allow,deny\n  Allow from 127.0.0.1\n</Location>\n\
                 <Policy default>\n  <Limit All>\n    Order deny,allow\n  </Limit>\n</Policy>\n"
            ),
        )
        .unwrap();
        let r = root.display();
        std::fs::write(
            root.join("cups-files.conf"),
            format!(
                "ServerRoot {r}\nRequestRoot {r}/spool\nCacheDir {r}/cache\nStateDir {r}/state\nTempDir {r}/tmp\n\
                 AccessLog {r}/log/access_log\nErrorLog {r}/log/error_log\nPageLog {r}/log/page_log\n\
                 Printcap {r}/printcap\nFileDevice Yes\nUser lp\nGroup lp\nSystemGroup root\n"
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/cupsd")
            .arg("-f")
            .arg("-c")
            .arg(root.join("cupsd.conf"))
            .arg("-s")
            .arg(root.join("cups-files.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cupsd starts");
        let server = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&server).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "cupsd did not listen on {server}: {}",
                std::fs::read_to_string(root.join("log/error_log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let cups = Cupsd { dir, server, child };
        cups.run(
            "/usr/sbin/lpadmin",
            &["-p", "Virtual", "-E", "-v", "file:///dev/null", "-P", PPD],
        );
        cups
    }

    fn page_log(&self) -> PathBuf {
        self.dir.path().join("log/page_log")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = Command::new(tool)
            .arg("-h")
            .arg(&self.server)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Prints a text file of `pages` pages (a form feed between them) as
    /// `user`, titled `title`.
    fn print(&self, user: &str, title: &str, pages: usize) {
        let text: Vec<String> = (1..=pages).map(|p| format!("page {p}\n")).collect();
        let doc = self
            .dir
            .path()
            .join(format!("{}.txt", uuid::Uuid::new_v4()));
        std::fs::write(&doc, text.join("\x0c")).unwrap();
        set_mode(&doc, 0o644);
        self.run(
            "/usr/bin/lp",
            &[
                "-d",
                "Virtual",
                "-U",
                user,
                "-t",
                title,
                doc.to_str().unwrap(),
            ],
        );
    }
}

impl Drop for Cupsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_page_job_on_a_real_cupsd_is_logged_with_its_pages_and_raises_the_mass_printing_alarm()
{
    let cups = Cupsd::start();
    let gw = Gw::start().await;
    let alerting = mamori_alerting::start(alerting_config(&gw, ""))
        .await
        .expect("alerting starts");
    let admin = gw.signup("Print KK", "tenant").await;
    set_tenant_policy(
        &gw,
        &admin,
        json!({"mass_print": {"pages": 50, "window_minutes": 60}}),
    )
    .await;

    // A job before the agent runs is history, not news.
    cups.print("sato", "old.txt", 2);
    wait_for(
        "the old job in the page log",
        Duration::from_secs(30),
        || async {
            std::fs::read_to_string(cups.page_log())
                .ok()
                .filter(|l| l.contains("old.txt"))
        },
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    enroll_agent(&gw, &admin, state.path(), "print-test").await;
    let mut opts = RunOptions::new(state.path().to_owned());
    opts.collectors = "print".parse::<CollectorSet>().unwrap();
    opts.platform.cups_page_log = cups.page_log();
    let (stop_tx, agent) = run_agent(opts);
    wait_for(
        "the print collector's place",
        Duration::from_secs(10),
        || async { state.path().join("print.offset").exists().then_some(()) },
    )
    .await;

    cups.print("sato", "給与明細 2026-11.txt", 60);
    let events = wait_for("the print event", Duration::from_secs(60), || async {
        let (_, v) = gw.get(&admin, "/api/v1/events?kind=print").await;
        let e = v["events"].as_array().cloned().unwrap_or_default();
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(
        events.len(),
        1,
        "the job from before the agent is not reported: {events:?}"
    );
    let print = &events[0]["detail"]["print"];
    assert_eq!(print["pages"], 60, "{}", events[0]);
    assert_eq!(print["printer"], "Virtual");
    assert_eq!(print["document"], "給与明細 2026-11.txt");
    assert_eq!(events[0]["os_user"], "sato");

    let alarm = wait_for(
        "the mass-printing alarm",
        Duration::from_secs(30),
        || async {
            alarms(&gw, &admin)
                .await
                .into_iter()
                .find(|a| a["category"] == "mass_print")
        },
    )
    .await;
    assert!(
        alarm["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("給与明細"),
        "{alarm}"
    );

    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
    alerting.shutdown().await;
}
