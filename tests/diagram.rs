//! `bazaar diagram` as a person uses it, on a run directory whose history is
//! written here line by line (no market needed): where the SVG goes, what
//! it holds, and the clear errors for a bad node, an empty window or a
//! directory that is not a run's.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// A run directory with the histories of peer 1 (a buyer) and trader 6: one
/// buy at 100 ms answered at 103 ms, one at 1.5 s, and trader 6 killed at
/// 1.6 s by the launcher.
fn run_dir(root: &Path) {
    let history = root.join("history");
    std::fs::create_dir_all(&history).unwrap();
    let t0 = 1_700_000_000_000_000u64;
    let at = |ms: u64| t0 + ms * 1000;
    let id = r#""id":{"node":1,"seq":1}"#;
    let id2 = r#""id":{"node":1,"seq":2}"#;
    let peer1 = [
        format!(r#"{{"event":"opened","node":1,"wall_us":{}}}"#, at(0)),
        format!(
            r#"{{"event":"sent","wall_us":{},"lamport":3,"to":6,"msg":6,"kind":"buy",{id}}}"#,
            at(100)
        ),
        format!(
            r#"{{"event":"received","wall_us":{},"lamport":8,"from":6,"sent_lamport":7,"kind":"granted",{id}}}"#,
            at(103)
        ),
        format!(
            r#"{{"event":"sent","wall_us":{},"lamport":9,"to":6,"msg":6,"kind":"buy",{id2}}}"#,
            at(1500)
        ),
        format!(r#"{{"event":"closed","node":1,"wall_us":{}}}"#, at(2000)),
    ];
    let peer6 = [
        format!(r#"{{"event":"opened","node":6,"wall_us":{}}}"#, at(1)),
        format!(
            r#"{{"event":"received","wall_us":{},"lamport":4,"from":1,"sent_lamport":3,"msg":6,"kind":"buy",{id}}}"#,
            at(101)
        ),
        format!(
            r#"{{"event":"sent","wall_us":{},"lamport":7,"to":1,"kind":"granted",{id}}}"#,
            at(102)
        ),
    ];
    let launcher = [format!(
        r#"{{"event":"failover","wall_us":{},"lamport":null,"by":null,"what":{{"kind":"fault","fault":"kill","victim":6}}}}"#,
        at(1600)
    )];
    for (name, lines) in [
        ("peer1", &peer1[..]),
        ("peer6", &peer6[..]),
        ("launcher", &launcher[..]),
    ] {
        std::fs::write(
            history.join(format!("{name}.jsonl")),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }
}

fn diagram(args: &[&str]) -> Output {
    Command::new(common::bin())
        .arg("diagram")
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_first_second_goes_to_run_dir_diagram_svg() {
    let dir = tempfile::tempdir().unwrap();
    run_dir(dir.path());
    let run = dir.path().to_str().unwrap();
    let out = diagram(&[run]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 messages, 0.000–1.000 s"),
        "{}",
        text(&out)
    );
    let svg = std::fs::read_to_string(dir.path().join("diagram.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    assert_eq!(svg.matches("<g class=\"msg").count(), 2, "{svg}");
    assert!(svg.contains("buy 6  L3→4"), "{svg}");
    assert!(svg.contains("granted  L7→8"), "{svg}");
    assert!(!svg.contains("kill peer6"), "the fault is after the window");
}

#[test]
fn a_window_and_nodes_can_be_chosen_and_the_svg_written_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    run_dir(dir.path());
    let run = dir.path().to_str().unwrap();
    let file = dir.path().join("late.svg");
    let out = diagram(&[
        run,
        "--from",
        "1.4",
        "--to",
        "1700ms",
        "--nodes",
        "peer6,1",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let svg = std::fs::read_to_string(&file).unwrap();
    assert_eq!(svg.matches("<g class=\"msg lost\"").count(), 1, "{svg}");
    assert!(svg.contains("kill peer6"), "{svg}");
    assert!(svg.find(">peer6<").unwrap() < svg.find(">peer1<").unwrap());
    assert!(!dir.path().join("diagram.svg").exists());
}

#[test]
fn bad_requests_are_named_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    run_dir(dir.path());
    let run = dir.path().to_str().unwrap();

    let out = diagram(&[run, "--nodes", "peer9"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no node peer9 in this run; its nodes are peer1, peer6"),
        "{}",
        text(&out)
    );

    let out = diagram(&[run, "--from", "2s", "--to", "1s"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is empty"), "{}", text(&out));

    let out = diagram(&[run, "--nodes", "trader"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not a node"), "{}", text(&out));

    let empty = tempfile::tempdir().unwrap();
    let out = diagram(&[empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no history/ directory"),
        "{}",
        text(&out)
    );
}
