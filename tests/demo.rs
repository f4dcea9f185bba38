//! `imbang demo --once`: the narrated demo runs to the end and shows what it says it shows.
mod support;

use support::{TempDir, run_imbang};

/// The lines of `section` (from the line starting with `start` up to the next line starting
/// with `end`, both excluded) that report a request.
fn answers<'a>(lines: &[&'a str], start: &str, end: Option<&str>) -> Vec<&'a str> {
    let from = lines
        .iter()
        .position(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?}"));
    let to = match end {
        Some(end) => lines
            .iter()
            .position(|l| l.starts_with(end))
            .unwrap_or_else(|| panic!("no line starting with {end:?}")),
        None => lines.len(),
    };
    assert!(from < to, "{start:?} comes after {end:?}");
    lines[from + 1..to]
        .iter()
        .copied()
        .filter(|l| l.starts_with("   GET / -> "))
        .collect()
}

#[tokio::test]
async fn demo_once_shows_round_robin_failover_and_recovery_then_exits() {
    let dir = TempDir::new("demo");
    let out = run_imbang(dir.path(), &["demo", "--once", "--listen", "127.0.0.1:0"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let stdout = out.stdout.as_str();
    let lines: Vec<&str> = stdout.lines().collect();

    // The configuration it prints: between its heading and the site's address, indented.
    let from = lines
        .iter()
        .position(|l| l.starts_with("The configuration (nginx syntax"))
        .unwrap_or_else(|| panic!("no configuration heading:\n{stdout}"));
    let to = lines
        .iter()
        .position(|l| l.starts_with("The site: http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no site address:\n{stdout}"));
    let site = lines[to]
        .trim_start_matches("The site: ")
        .trim_end_matches('/');
    let dashboard =
        format!("Its dashboard (NGINX Plus's API, free in imbang): {site}/api/dashboard.html");
    assert_eq!(lines.get(to + 1), Some(&dashboard.as_str()), "{stdout}");
    let config: Vec<&str> = lines[from + 1..to]
        .iter()
        .map(|l| {
            assert!(l.is_empty() || l.starts_with("    "), "{l:?}");
            l.get(4..).unwrap_or_default()
        })
        .collect();
    let config = config.join("\n").trim().to_owned() + "\n";
    let has = |line: &str| config.lines().any(|l| l.trim() == line);
    for line in [
        "daemon off;",
        "upstream demo {",
        "listen 127.0.0.1:0;",
        "proxy_pass http://demo;",
        "location /api/ {",
        "api;",
    ] {
        assert!(has(line), "no {line:?} in the printed config:\n{config}");
    }
    // The backends' ports, from the upstream's servers.
    let ports: Vec<u16> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server 127.0.0.1:"))
        .map(|rest| {
            let port = rest
                .strip_suffix(" max_fails=1 fail_timeout=3s;")
                .unwrap_or_else(|| panic!("server line {rest:?}"));
            port.parse().unwrap()
        })
        .collect();
    let [p1, p2] = ports[..] else {
        panic!("expected two upstream servers in the printed config:\n{config}")
    };
    // It is a real configuration: imbang -t accepts it as printed, without a warning.
    dir.write("logs/.keep", "");
    let file = dir.write("demo.conf", &config);
    let file = file.to_str().unwrap();
    let prefix = format!("{}/", dir.path().to_str().unwrap());
    let checked = run_imbang(dir.path(), &["-t", "-p", &prefix, "-c", file]).await;
    assert_eq!(
        (checked.code, checked.stderr),
        (
            Some(0),
            format!(
                "imbang: the configuration file {file} syntax is ok\n\
                 imbang: configuration file {file} test is successful\n"
            )
        ),
        "the printed config:\n{config}"
    );

    let b1 = format!("   GET / -> 200 Hello from backend 1 (port {p1})");
    let b2 = format!("   GET / -> 200 Hello from backend 2 (port {p2})");

    // 1: round-robin alternates.
    assert_eq!(
        answers(&lines, "1. ", Some("2. ")),
        [&b1, &b2, &b1, &b2],
        "part 1:\n{stdout}"
    );
    // 2: backend 2 stopped: every answer 200, none from backend 2.
    assert_eq!(
        answers(&lines, "2. backend 2 stops", Some("3. ")),
        [&b1, &b1, &b1, &b1],
        "part 2:\n{stdout}"
    );
    // 3: backend 2 back: backend 1 answers until fail_timeout ends, then backend 2.
    let part3 = answers(&lines, "3. backend 2 comes back", None);
    let (last, before) = part3.split_last().expect("no answer in part 3");
    assert_eq!(*last, b2, "part 3:\n{stdout}");
    assert!(before.iter().all(|l| *l == b1), "part 3:\n{stdout}");
    assert_eq!(
        lines.last().copied(),
        Some("   After fail_timeout, backend 2 gets its share again."),
        "{stdout}"
    );

    // The balancer's own error log (stderr) tells why backend 2 was skipped.
    assert!(
        out.stderr.lines().any(|l| l
            .contains("connect() failed (111: Connection refused) while connecting to upstream")
            && l.contains(&format!("upstream: \"http://127.0.0.1:{p2}/\""))),
        "stderr:\n{}",
        out.stderr
    );
}
