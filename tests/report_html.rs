//! The HTML report, as a person sees it: the failover example
//! (`examples/failover.toml`: 6 peers, 2 traders, one SIGKILLed), its
//! times scaled down (4 s of trading, the kill at 2 s), run as a whole
//! market of real processes, then its `report.html` opened in headless
//! Chromium. The page must fetch nothing, and in the browser the verdict
//! table, every plot and the space-time diagrams (the market's first second,
//! around the kill) must be there and visible, with nothing logged to the
//! console. With `BAZAAR_SCREENSHOT=FILE.png` the test also saves a
//! screenshot of the whole page there.
//!
//! Chromium is `/usr/bin/chromium` (Debian's `chromium`), or the binary
//! `BAZAAR_CHROMIUM` names. Where there is none the browser half says so and
//! is skipped, unless `BAZAAR_REQUIRE_CHROMIUM=1` (CI sets it), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Bounds the browser's run; a hung browser fails the test rather than CI.
const PATIENCE: Duration = Duration::from_secs(180);

fn chromium() -> Option<PathBuf> {
    let named = std::env::var_os("BAZAAR_CHROMIUM").map(PathBuf::from);
    let found = named
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("BAZAAR_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "BAZAAR_REQUIRE_CHROMIUM=1 but no chromium at /usr/bin/chromium (apt-get install chromium)"
        );
        eprintln!(
            "SKIPPED the browser half of this test: no chromium at /usr/bin/chromium (apt-get install chromium, or set BAZAAR_CHROMIUM)"
        );
    }
    found
}

/// Runs headless Chromium on `page` with `args`; returns (stdout, stderr).
fn browse(chromium: &Path, page: &Path, args: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    // Read both pipes on threads so neither fills; wait with a bound.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let pid = child.id();
    let (done, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait()));
    if exited.recv_timeout(PATIENCE).is_err() {
        // SAFETY: kill(2) on the browser this test started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        panic!("chromium did not finish within {PATIENCE:?}");
    }
    (out.join().unwrap(), err.join().unwrap())
}

/// A script the test adds to a copy of the page: on load it writes, into
/// `<pre id="probe">`, each element's id and whether it is visible.
fn probe(ids: &[String]) -> String {
    let ids: Vec<String> = ids.iter().map(|i| format!("{i:?}")).collect();
    format!(
        r##"<pre id="probe">pending</pre><script>
window.addEventListener("load", () => {{
  const out = [];
  for (const id of [{}]) {{
    const e = document.getElementById(id);
    if (!e) {{ out.push(id + " missing"); continue; }}
    const r = e.getBoundingClientRect();
    const s = getComputedStyle(e);
    const shown = r.width > 0 && r.height > 0 && s.display !== "none" && s.visibility !== "hidden";
    const svg = e.tagName === "FIGURE" ? e.querySelector("svg") : e;
    const drawn = svg && svg.getBoundingClientRect().height > 100;
    out.push(id + (shown && drawn ? " visible" : " hidden"));
  }}
  out.push("verdict rows " + document.querySelectorAll("#verdicts tbody tr").length);
  out.push("page height " + document.documentElement.scrollHeight);
  document.getElementById("probe").textContent = out.join("\n");
}});
</script>"##,
        ids.join(", ")
    )
}

/// The failover example with its times scaled down: 4 s of trading, the
/// kill at 2 s.
fn failover_example() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/failover.toml");
    let mut cfg: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let market = cfg["market"].as_table_mut().unwrap();
    market.insert("duration".into(), "4s".into());
    market.insert("seed".into(), 11.into());
    let faults = cfg["faults"].as_array_mut().unwrap();
    assert_eq!(faults.len(), 1, "the example kills one trader");
    faults[0]
        .as_table_mut()
        .unwrap()
        .insert("at".into(), "2s".into());
    cfg.to_string()
}

#[test]
fn the_html_report_of_a_failover_renders_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, out) = common::run_market(dir.path(), &failover_example());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "seed 11: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let run = common::the_run(&runs);
    assert_eq!(
        std::fs::canonicalize(runs.join("latest")).unwrap(),
        std::fs::canonicalize(&run).unwrap(),
        "runs/latest is the newest run"
    );
    let report = common::read_report(&run);
    let html_path = run.join("report.html");
    let html = std::fs::read_to_string(&html_path).unwrap();

    // Self-contained: nothing to fetch (the only URLs are SVG's namespace).
    for fetch in ["src=", "<link", "url(", "@import"] {
        assert!(!html.contains(fetch), "report.html has {fetch}");
    }
    let urls = html.matches("http").count();
    let namespaces = html.matches("http://www.w3.org/").count();
    assert_eq!(urls, namespaces, "a URL other than an XML namespace");

    // `bazaar report --open` prints the page's path and keeps run_dir.
    let open = Command::new(common::bin())
        .args(["report", "--open"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(open.status.success(), "{open:?}");
    let printed = PathBuf::from(String::from_utf8_lossy(&open.stdout).trim());
    assert_eq!(
        std::fs::canonicalize(printed).unwrap(),
        std::fs::canonicalize(&html_path).unwrap()
    );
    assert_eq!(common::read_report(&run).run_dir, report.run_dir);

    let Some(chromium) = chromium() else { return };
    let mut ids = vec!["verdicts".to_string(), "timeline".to_string()];
    let stems: Vec<String> = report
        .plots
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(stems.len() >= 8, "{stems:?}");
    ids.extend(stems.iter().map(|s| format!("plot-{s}")));
    // The space-time diagrams: the first second, and around the kill.
    assert_eq!(
        report.diagrams,
        [
            PathBuf::from("diagrams/start.svg"),
            PathBuf::from("diagrams/fault-1.svg")
        ]
    );
    for d in &report.diagrams {
        let svg = std::fs::read_to_string(run.join(d)).unwrap();
        assert!(svg.contains("<g class=\"msg"), "{d:?} has no message");
    }
    let kill = std::fs::read_to_string(run.join("diagrams/fault-1.svg")).unwrap();
    assert!(kill.contains("class=\"mark fault\""), "the kill is marked");
    assert!(
        kill.contains("class=\"mark detection\""),
        "the detection is marked"
    );
    assert!(
        kill.contains("class=\"mark epoch\""),
        "the new epoch is marked"
    );
    ids.extend(["diagram-start".to_string(), "diagram-fault-1".to_string()]);
    let probed = run.join("probe.html");
    std::fs::write(
        &probed,
        html.replace("</body>", &format!("{}</body>", probe(&ids))),
    )
    .unwrap();

    let (dom, log) = browse(&chromium, &probed, &["--dump-dom"]);
    let start = dom.find("<pre id=\"probe\">").expect("the page loaded") + 16;
    let end = dom[start..].find("</pre>").unwrap() + start;
    let seen = &dom[start..end];
    for id in &ids {
        assert!(
            seen.lines().any(|l| l == format!("{id} visible")),
            "{id} is not visible: {seen}"
        );
    }
    assert!(
        seen.contains(&format!("verdict rows {}", report.checks.len())),
        "{seen}"
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the browser logged: {console:#?}");

    if let Some(png) = std::env::var_os("BAZAAR_SCREENSHOT") {
        let height: u32 = seen
            .lines()
            .find_map(|l| l.strip_prefix("page height "))
            .and_then(|h| h.parse().ok())
            .unwrap_or(8000);
        let png = PathBuf::from(png);
        let (_, log) = browse(
            &chromium,
            &html_path,
            &[
                &format!("--screenshot={}", png.display()),
                &format!("--window-size=1280,{}", height.min(16000)),
                "--hide-scrollbars",
            ],
        );
        assert!(png.is_file(), "no screenshot at {}: {log}", png.display());
        eprintln!("screenshot of the report: {}", png.display());
    }
}
