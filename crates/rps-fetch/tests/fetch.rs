//! rps-fetch against a server on 127.0.0.1 serving the shared archives, with the
//! failures real networks have.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rps_core::Layout;
use rps_fetch::{DatasetConfig, Retry, Source, fetch_dataset, fetch_file};

fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

/// What the server does for a request, given how often the path was asked for.
#[derive(Clone, Copy)]
enum Behavior {
    Serve,
    /// Sends the headers and half the body, then closes the connection.
    CutMidway,
    /// Sends half the body without a Content-Length, then closes: a cut that looks
    /// like a complete transfer.
    CutWithoutLength,
    /// Answers a Range request with 416 and no usable Content-Range.
    RefuseRange,
    /// Answers a Range request with 206 and the whole body, no Content-Range.
    WholeBodyAs206,
    Status(u16),
}

/// A loopback HTTP server that honours `Range` and fails on cue; it stops after a
/// bounded number of connections.
struct Server {
    base: String,
    hits: Arc<Mutex<HashMap<String, u32>>>,
    ranges: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(
        files: HashMap<String, Vec<u8>>,
        plan: impl Fn(&str, u32) -> Behavior + Send + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let (hits2, ranges2) = (hits.clone(), ranges.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(40) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut range_start = 0usize;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        ranges2.lock().unwrap().push(v.trim().to_string());
                        range_start = v.trim().trim_end_matches('-').parse().unwrap();
                    }
                }
                let hit = {
                    let mut hits = hits2.lock().unwrap();
                    let n = hits.entry(path.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                let Some(body) = files.get(path.trim_start_matches('/')) else {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                };
                let status = |code: u16| {
                    format!(
                        "HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                };
                match plan(&path, hit) {
                    Behavior::Status(code) => {
                        let _ = stream.write_all(status(code).as_bytes());
                    }
                    Behavior::RefuseRange if range_start > 0 => {
                        let _ = stream.write_all(status(416).as_bytes());
                    }
                    Behavior::CutWithoutLength => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                        let _ = stream.write_all(&body[..body.len() / 2]);
                    }
                    Behavior::WholeBodyAs206 if range_start > 0 => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(body);
                    }
                    behavior => {
                        let rest = &body[range_start..];
                        let status = if range_start > 0 {
                            format!(
                                "206 Partial Content\r\nContent-Range: bytes {range_start}-{}/{}",
                                body.len() - 1,
                                body.len()
                            )
                        } else {
                            "200 OK".to_string()
                        };
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            rest.len()
                        );
                        let send = if matches!(behavior, Behavior::CutMidway) {
                            &rest[..rest.len() / 2]
                        } else {
                            rest
                        };
                        let _ = stream.write_all(send);
                    }
                }
            }
        });
        Self { base, hits, ranges }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn hits(&self, name: &str) -> u32 {
        self.hits
            .lock()
            .unwrap()
            .get(&format!("/{name}"))
            .copied()
            .unwrap_or(0)
    }
}

fn shared_files() -> HashMap<String, Vec<u8>> {
    ["rps.zip", "rps-test-set.zip"]
        .into_iter()
        .map(|n| (n.to_string(), std::fs::read(shared_data().join(n)).unwrap()))
        .collect()
}

fn quick_retry() -> Retry {
    Retry {
        attempts: 3,
        first_delay: Duration::from_millis(10),
    }
}

fn config(data: &Path, server: &Server) -> DatasetConfig {
    DatasetConfig {
        layout: Layout::new(data),
        source: Source {
            from: None,
            retry: quick_retry(),
        },
        train_url: server.url("rps.zip"),
        test_url: server.url("rps-test-set.zip"),
        max_unpacked_bytes: 1 << 30,
    }
}

fn assert_full_counts(rows: &[rps_core::rows::DatasetCount]) {
    let count = |split: &str| -> Vec<usize> {
        rows.iter()
            .filter(|r| r.split.name() == split)
            .map(|r| r.count)
            .collect()
    };
    assert_eq!(count("train"), [840, 840, 840]);
    assert_eq!(count("test"), [124, 124, 124]);
    let classes: Vec<&str> = rows.iter().take(3).map(|r| r.class.as_str()).collect();
    assert_eq!(classes, ["paper", "rock", "scissors"]);
}

#[test]
fn clean_download_and_extraction() {
    let server = Server::start(shared_files(), |_, _| Behavior::Serve);
    let dir = tempfile::tempdir().unwrap();
    let rows = fetch_dataset(&config(dir.path(), &server)).unwrap();
    assert_full_counts(&rows);
    let summary = std::fs::read_to_string(dir.path().join("rps/summary.csv")).unwrap();
    assert!(
        summary.starts_with("split,class,count\ntrain,paper,840\n"),
        "{summary}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("rps/test/rock"))
            .unwrap()
            .count(),
        124
    );
    // A second run reuses the verified files.
    fetch_dataset(&config(dir.path(), &server)).unwrap();
    assert_eq!(server.hits("rps.zip"), 1);
}

#[test]
fn a_cut_transfer_resumes_with_a_range_request() {
    let server = Server::start(shared_files(), |path, hit| {
        if path == "/rps.zip" && hit == 1 {
            Behavior::CutMidway
        } else {
            Behavior::Serve
        }
    });
    let dir = tempfile::tempdir().unwrap();
    assert_full_counts(&fetch_dataset(&config(dir.path(), &server)).unwrap());
    assert_eq!(server.hits("rps.zip"), 2);
    let half = std::fs::metadata(shared_data().join("rps.zip"))
        .unwrap()
        .len()
        / 2;
    assert_eq!(*server.ranges.lock().unwrap(), [format!("{half}-")]);
}

#[test]
fn a_server_error_is_retried() {
    let server = Server::start(shared_files(), |_, hit| {
        if hit == 1 {
            Behavior::Status(500)
        } else {
            Behavior::Serve
        }
    });
    let dir = tempfile::tempdir().unwrap();
    assert_full_counts(&fetch_dataset(&config(dir.path(), &server)).unwrap());
    assert_eq!(server.hits("rps.zip"), 2);
}

#[test]
fn not_found_is_a_clear_error_without_retries() {
    let server = Server::start(shared_files(), |_, _| Behavior::Serve);
    let dir = tempfile::tempdir().unwrap();
    let source = Source {
        from: None,
        retry: quick_retry(),
    };
    let err = fetch_file(
        &Layout::new(dir.path()),
        &source,
        &server.url("missing.zip"),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("HTTP 404"), "{err:#}");
    assert_eq!(server.hits("missing.zip"), 1);
}

#[test]
fn a_corrupt_archive_leaves_no_dataset() {
    let mut files = shared_files();
    let train = files.get_mut("rps.zip").unwrap();
    train.truncate(train.len() / 3);
    let server = Server::start(files, |_, _| Behavior::Serve);
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_dataset(&config(dir.path(), &server)).unwrap_err();
    assert!(format!("{err:#}").contains("rps.zip"), "{err:#}");
    let rps = dir.path().join("rps");
    assert!(!rps.join("train").exists() && !rps.join("summary.csv").exists());
    assert!(
        !rps.exists() || std::fs::read_dir(&rps).unwrap().count() == 0,
        "leftovers in {}",
        rps.display()
    );
}

#[test]
fn an_entry_escaping_the_folder_is_refused() {
    let mut bytes = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut bytes));
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("rps/rock/a.png", options).unwrap();
        zip.write_all(b"x").unwrap();
        zip.start_file("rps/../evil", options).unwrap();
        zip.write_all(b"x").unwrap();
        zip.finish().unwrap();
    }
    let from = tempfile::tempdir().unwrap();
    std::fs::write(from.path().join("rps.zip"), &bytes).unwrap();
    std::fs::copy(
        shared_data().join("rps-test-set.zip"),
        from.path().join("rps-test-set.zip"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path(), from.path());
    config.source.from = Some(from.path().to_path_buf());
    let err = fetch_dataset(&config).unwrap_err();
    assert!(
        format!("{err:#}").contains("unsafe entry \"rps/../evil\""),
        "{err:#}"
    );
    assert!(!dir.path().join("evil").exists() && !dir.path().join("rps/evil").exists());
}

#[test]
fn a_file_that_changed_since_it_was_recorded_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let from = shared_data();
    let config = local_config(dir.path(), &from);
    fetch_dataset(&config).unwrap();
    std::fs::write(dir.path().join("raw/rps.zip"), b"tampered").unwrap();
    let err = fetch_dataset(&config).unwrap_err().to_string();
    assert!(
        err.contains("rps.zip") && err.contains("SHA256SUMS"),
        "{err}"
    );
    assert!(
        dir.path().join("raw/rps.zip.bad").exists() && !dir.path().join("raw/rps.zip").exists()
    );
}

#[test]
fn from_a_local_folder_and_file_urls() {
    let dir = tempfile::tempdir().unwrap();
    assert_full_counts(&fetch_dataset(&local_config(dir.path(), &shared_data())).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path(), &shared_data());
    config.source.from = None;
    config.train_url = format!("file://{}", shared_data().join("rps.zip").display());
    config.test_url = format!(
        "file://{}",
        shared_data().join("rps-test-set.zip").display()
    );
    assert_full_counts(&fetch_dataset(&config).unwrap());
}

fn local_config(data: &Path, from: &Path) -> DatasetConfig {
    DatasetConfig {
        layout: Layout::new(data),
        source: Source {
            from: Some(from.to_path_buf()),
            retry: quick_retry(),
        },
        train_url: "https://example.invalid/rps.zip".into(),
        test_url: "https://example.invalid/rps-test-set.zip".into(),
        max_unpacked_bytes: 1 << 30,
    }
}

fn recorded(data: &Path) -> String {
    std::fs::read_to_string(data.join("raw/SHA256SUMS")).unwrap_or_default()
}

#[test]
fn a_cut_without_length_is_set_aside_untrusted_and_fetched_again() {
    let server = Server::start(shared_files(), |path, hit| match (path, hit) {
        ("/rps.zip", 1) => Behavior::CutWithoutLength,
        _ => Behavior::Serve,
    });
    let dir = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        fetch_dataset(&config(dir.path(), &server)).unwrap_err()
    );
    assert!(
        err.contains("set aside") && err.contains("rps.zip.bad"),
        "{err}"
    );
    assert!(
        !recorded(dir.path()).contains(" rps.zip\n"),
        "a cut archive was trusted"
    );
    assert!(!dir.path().join("rps/summary.csv").exists());
    assert_full_counts(&fetch_dataset(&config(dir.path(), &server)).unwrap());
    assert!(recorded(dir.path()).contains(" rps.zip\n"));
}

/// Fetches the dataset from a server that cuts the first transfer of `rps.zip` and
/// answers the resume as `resume`; returns the server and the data folder.
fn cut_then_resumed_as(resume: Behavior) -> (Server, tempfile::TempDir) {
    let server = Server::start(shared_files(), move |path, hit| match (path, hit) {
        ("/rps.zip", 1) => Behavior::CutMidway,
        ("/rps.zip", 2) => resume,
        _ => Behavior::Serve,
    });
    let dir = tempfile::tempdir().unwrap();
    assert_full_counts(&fetch_dataset(&config(dir.path(), &server)).unwrap());
    (server, dir)
}

#[test]
fn a_refused_resume_starts_over() {
    let (server, _dir) = cut_then_resumed_as(Behavior::RefuseRange);
    assert_eq!(server.hits("rps.zip"), 3);
}

#[test]
fn a_206_from_byte_zero_is_not_appended() {
    let (_server, dir) = cut_then_resumed_as(Behavior::WholeBodyAs206);
    let got = std::fs::read(dir.path().join("raw/rps.zip")).unwrap();
    assert_eq!(got, std::fs::read(shared_data().join("rps.zip")).unwrap());
}

#[test]
fn a_bad_test_archive_leaves_the_whole_old_dataset() {
    let dir = tempfile::tempdir().unwrap();
    fetch_dataset(&local_config(dir.path(), &shared_data())).unwrap();
    let summary = std::fs::read(dir.path().join("rps/summary.csv")).unwrap();
    // New sources: a good training archive (one class folder), a cut test archive.
    let from = tempfile::tempdir().unwrap();
    let mut small = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut small));
        zip.start_file("new/rock/a.png", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"x").unwrap();
        zip.finish().unwrap();
    }
    std::fs::write(from.path().join("train2.zip"), &small).unwrap();
    let test = std::fs::read(shared_data().join("rps-test-set.zip")).unwrap();
    std::fs::write(from.path().join("test2.zip"), &test[..test.len() / 3]).unwrap();
    let mut config = local_config(dir.path(), from.path());
    config.train_url = "https://example.invalid/train2.zip".into();
    config.test_url = "https://example.invalid/test2.zip".into();
    let err = format!("{:#}", fetch_dataset(&config).unwrap_err());
    assert!(err.contains("test2.zip"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("rps/summary.csv")).unwrap(),
        summary
    );
    let papers = std::fs::read_dir(dir.path().join("rps/train/paper"))
        .unwrap()
        .count();
    assert_eq!(papers, 840, "the training split was replaced alone");
}

#[test]
fn weights_cut_short_without_a_length_are_not_trusted_until_whole() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rps-fixtures/reference/resnet34_w4_s64_seed0.pth");
    let files = HashMap::from([("w.pth".to_string(), std::fs::read(&weights).unwrap())]);
    let server = Server::start(files, |_, hit| match hit {
        1 => Behavior::CutWithoutLength,
        _ => Behavior::Serve,
    });
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let source = Source {
        from: None,
        retry: quick_retry(),
    };
    let err = format!(
        "{:#}",
        fetch_file(&layout, &source, &server.url("w.pth")).unwrap_err()
    );
    assert!(
        err.contains("not a complete zip archive") && err.contains("w.pth.bad"),
        "{err}"
    );
    assert!(!recorded(dir.path()).contains(" w.pth\n"));
    let path = fetch_file(&layout, &source, &server.url("w.pth")).unwrap();
    assert_eq!(
        std::fs::read(path).unwrap(),
        std::fs::read(&weights).unwrap()
    );
    assert!(recorded(dir.path()).contains(" w.pth\n"));
}

#[test]
fn the_checksum_file_is_no_download_target() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source {
        from: None,
        retry: quick_retry(),
    };
    let layout = Layout::new(dir.path());
    for url in [
        "http://127.0.0.1:9/SHA256SUMS",
        "http://127.0.0.1:9/rps.zip.part",
    ] {
        let err = fetch_file(&layout, &source, url).unwrap_err().to_string();
        assert!(err.contains("refusing"), "{err}");
    }
    assert!(!dir.path().join("raw").exists());
}

#[test]
fn a_corrupt_local_archive_is_set_aside_and_copied_again_once_fixed() {
    let from = tempfile::tempdir().unwrap();
    let train = std::fs::read(shared_data().join("rps.zip")).unwrap();
    std::fs::write(from.path().join("rps.zip"), &train[..train.len() / 2]).unwrap();
    std::fs::copy(
        shared_data().join("rps-test-set.zip"),
        from.path().join("rps-test-set.zip"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = local_config(dir.path(), from.path());
    let err = format!("{:#}", fetch_dataset(&config).unwrap_err());
    assert!(err.contains("the next run fetches it again"), "{err}");
    std::fs::write(from.path().join("rps.zip"), &train).unwrap();
    assert_full_counts(&fetch_dataset(&config).unwrap());
}

#[test]
fn a_host_that_does_not_resolve_says_how_to_run_offline_without_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let source = Source {
        from: None,
        retry: Retry {
            attempts: 6,
            first_delay: Duration::from_secs(5),
        },
    };
    let err = fetch_file(
        &Layout::new(dir.path()),
        &source,
        "https://nowhere.invalid/rps.zip",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("FROM=DIR") && err.contains("WEIGHTS=random") && !err.contains("attempts"),
        "{err}"
    );
}

/// A zip archive of `files` (names with the top folder), each holding a byte.
fn zip_of(files: &[String]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut bytes));
    for name in files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"x").unwrap();
    }
    zip.finish().unwrap();
    bytes
}

/// A local folder holding `rps.zip` and `rps-test-set.zip` of these class folders.
fn archives_of(train: &[&str], test: &[&str]) -> tempfile::TempDir {
    let from = tempfile::tempdir().unwrap();
    for (name, top, classes) in [
        ("rps.zip", "rps", train),
        ("rps-test-set.zip", "rps-test-set", test),
    ] {
        let files: Vec<String> = classes.iter().map(|c| format!("{top}/{c}/a.png")).collect();
        std::fs::write(from.path().join(name), zip_of(&files)).unwrap();
    }
    from
}

#[test]
fn splits_that_make_no_classifier_dataset_are_refused_before_summary_csv() {
    let cases: [(&[&str], &[&str], &str); 3] = [
        (&["rock"], &["rock"], "1 class folders"),
        (
            &["paper", "rock"],
            &["paper", "scissors"],
            r#"["paper", "scissors"] differ"#,
        ),
        (
            &["paper", "rock\nscissors"],
            &["paper", "rock\nscissors"],
            "control character",
        ),
    ];
    for (train, test, says) in cases {
        let from = archives_of(train, test);
        let dir = tempfile::tempdir().unwrap();
        let err = format!(
            "{:#}",
            fetch_dataset(&local_config(dir.path(), from.path())).unwrap_err()
        );
        assert!(
            err.contains(says) && err.contains("do not make a dataset"),
            "{err}"
        );
        assert!(!dir.path().join("rps/summary.csv").exists());
        assert!(
            !dir.path().join("rps/train").exists(),
            "a split was swapped in"
        );
        assert!(
            !dir.path().join("raw/rps.zip.bad").exists(),
            "a genuine archive was blamed"
        );
    }
}

#[test]
fn a_write_error_while_unpacking_names_entry_and_destination_and_keeps_the_archive() {
    let long = "n".repeat(300);
    let from = tempfile::tempdir().unwrap();
    let train = [format!("rps/paper/{long}.png"), "rps/rock/a.png".into()];
    std::fs::write(from.path().join("rps.zip"), zip_of(&train)).unwrap();
    let test = [
        "rps-test-set/paper/a.png".to_string(),
        "rps-test-set/rock/a.png".into(),
    ];
    std::fs::write(from.path().join("rps-test-set.zip"), zip_of(&test)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        fetch_dataset(&local_config(dir.path(), from.path())).unwrap_err()
    );
    assert!(
        err.contains(&format!("entry \"rps/paper/{long}.png\": creating"))
            && err.contains("File name too long")
            && err.contains("stays trusted"),
        "{err}"
    );
    assert!(dir.path().join("raw/rps.zip").exists());
    assert!(!dir.path().join("raw/rps.zip.bad").exists());
}

#[test]
fn a_signal_while_unpacking_leaves_no_temporary_folder() {
    let from = tempfile::tempdir().unwrap();
    for (name, top) in [("rps.zip", "rps"), ("rps-test-set.zip", "rps-test-set")] {
        let files: Vec<String> = (0..20_000)
            .map(|i| format!("{top}/{}/{i}.png", ["paper", "rock"][i % 2]))
            .collect();
        std::fs::write(from.path().join(name), zip_of(&files)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rps-fetch"))
        .arg("--data")
        .arg(dir.path())
        .arg("--from")
        .arg(from.path())
        .arg("dataset")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Signal once a split's temporary folder holds unpacked files.
    let unpacking = |p: &String| p.contains(".part") && p.ends_with(".png");
    let started = std::time::Instant::now();
    while !walk(dir.path()).iter().any(unpacking) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "unpacking never began"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 130 and the handler's line: the signal landed while unpacking, not after.
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: removed"), "{stderr}");
    let left: Vec<String> = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains(".part"))
        .collect();
    assert!(left.is_empty(), "{left:?} left; {stderr}");
    assert!(!stderr.contains("could not remove"), "{stderr}");
}

/// Every path under `dir`, as text (none under a folder that went away meanwhile:
/// a stage may be renaming it).
fn walk(dir: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return paths;
    };
    for entry in entries.flatten() {
        paths.push(entry.path().display().to_string());
        if entry.path().is_dir() {
            paths.extend(walk(&entry.path()));
        }
    }
    paths
}
