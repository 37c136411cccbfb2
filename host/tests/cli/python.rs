//! The Python host's pytest suite (`host/python/`), run by the README's test
//! command: a virtual environment is created from PyPI when missing (or when
//! `pyproject.toml` changed), the component is written with
//! `relay-host component --out` (the very bytes this binary runs), and the
//! tests drive it against the stub connector binary.
//!
//! Without `python3` >= 3.10 the test prints that the Python tests were
//! SKIPPED and passes, unless `RELAY_REQUIRE_PYTHON=1` (set by `.ci/run`),
//! which turns the skip into a failure.

use std::path::Path;

use super::*;

/// Where the suite lives.
fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Runs `cmd` to completion (bounded), panicking with its output on failure.
async fn run_ok(cmd: Command, label: &str, timeout: Duration) -> String {
    let mut p = Proc::start(cmd, label);
    let code = p.wait_exit(timeout).await;
    assert_eq!(code, 0, "{}", p.context());
    p.stdout_lines().join("\n")
}

/// A `python3` of at least 3.10, or why not.
fn system_python() -> Result<String, String> {
    let python = std::env::var("RELAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-c", "import sys; print(sys.version_info >= (3, 10))"])
        .output()
        .map_err(|e| format!("{python} not runnable: {e}"))?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "True" => Ok(python),
        _ => Err(format!("{python} is older than 3.10")),
    }
}

/// The venv's interpreter, creating or refreshing the venv when needed.
async fn venv(python: &str) -> PathBuf {
    let dir = python_dir();
    let venv = dir.join(".venv");
    let bin = venv.join("bin/python");
    let project = std::fs::read(dir.join("pyproject.toml")).expect("read pyproject.toml");
    // Stamp: the pyproject it was installed from.
    let stamp = venv.join("relay-installed-from.toml");
    if bin.exists() && std::fs::read(&stamp).ok().as_deref() == Some(&project[..]) {
        return bin;
    }
    let mut create = Command::new(python);
    create.args(["-m", "venv", "--clear"]).arg(&venv);
    run_ok(create, "python3 -m venv", Duration::from_secs(300)).await;
    let mut install = Command::new(&bin);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-e",
        ])
        .arg(format!("{}[test]", dir.display()));
    run_ok(
        install,
        "pip install -e host/python[test]",
        Duration::from_secs(600),
    )
    .await;
    std::fs::write(&stamp, &project).expect("write the venv stamp");
    bin
}

/// The stub connector binary beside `relay-host` (built by `cargo test
/// --workspace`; built here with the workspace's features otherwise).
async fn stub_connector() -> PathBuf {
    let bin = Path::new(BIN).parent().unwrap().join("stub-connector");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--workspace", "--bin", "stub-connector"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if Path::new(BIN).parent().and_then(Path::file_name) == Some("release".as_ref()) {
        build.arg("--release");
    }
    run_ok(
        build,
        "cargo build --bin stub-connector",
        Duration::from_secs(600),
    )
    .await;
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_host_passes_its_pytest_suite() {
    let python = match system_python() {
        Ok(python) => python,
        Err(why) => {
            let required = std::env::var("RELAY_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
            assert!(!required, "Python host tests required but {why}");
            eprintln!("SKIPPED: the Python host tests ({why}; install python3 >= 3.10)");
            return;
        }
    };
    let venv_python = venv(&python).await;
    let stub = stub_connector().await;

    let dir = std::env::temp_dir().join(format!("relay-python-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let component = dir.join("relay.wasm");
    run_ok(
        relay_host(&["component", "--out", component.to_str().unwrap()]),
        "relay-host component --out",
        START,
    )
    .await;
    assert_eq!(
        std::fs::read(&component).unwrap(),
        relay_host::EMBEDDED_COMPONENT,
        "the Python host loads the bytes the Rust host runs"
    );
    let test_guest = dir.join("test-guest.wasm");
    std::fs::write(&test_guest, relay_test_artifacts::TEST_GUEST_WASM).unwrap();

    let mut pytest = Command::new(&venv_python);
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(python_dir())
        .env("RELAY_COMPONENT_WASM", &component)
        .env("RELAY_TEST_GUEST_WASM", &test_guest)
        .env("RELAY_STUB_CONNECTOR", &stub)
        .env("RELAY_HOST_BIN", BIN);
    for var in ENV_VARS {
        pytest.env_remove(var);
    }
    let out = run_ok(pytest, "pytest host/python", Duration::from_secs(600)).await;
    eprintln!("{}", tail(&out, 5));
    std::fs::remove_dir_all(&dir).unwrap();
}
