//! The stub connector the fleet dials: in a child process by default (so the
//! RSS figures hold the adapters only), or in this process.

use super::*;

/// Waits until `n` open connections completed their hello handshake.
pub(crate) async fn stub_wait_handshakes(
    stub: &StubConnector,
    n: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    stub.wait_until(
        |s| s.handshaken().filter(|c| c.is_open()).count() >= n,
        limit,
    )
    .await
    .map_err(|e| anyhow!("{e}"))
}

/// Sends `m` inbound DMs on every open handshaken connection, addressed to
/// the chat named after the connection's bot id (so each adapter can check
/// it got its own). Returns the connections served and how long the writes
/// took.
pub(crate) async fn stub_inject(
    stub: &StubConnector,
    m: usize,
    limit: Duration,
) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let targets: Vec<(usize, String)> = stub.with_state(|s| {
        s.handshaken()
            .filter(|c| c.is_open())
            .map(|c| {
                let bot = c.hellos.first().map(|h| h.bot_id.clone());
                (c.index, bot.unwrap_or_default())
            })
            .collect()
    });
    let mut writes = JoinSet::new();
    for (conn, bot) in &targets {
        let (stub, conn, bot) = (stub.clone(), *conn, bot.clone());
        writes.spawn(async move {
            let messages = (0..m)
                .map(|k| {
                    let event = events::dm("discord", &bot, "u1", &format!("echo {k} {bot}"));
                    WireMessage::Text(format!("{}\n", Deliverable::Inbound(event).to_frame(None)))
                })
                .collect();
            stub.send_to(Some(conn), messages).await
        });
    }
    within("the stub's inbound writes", limit, async {
        while let Some(done) = writes.join_next().await {
            done?.map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    })
    .await?;
    Ok((targets.len(), started.elapsed()))
}

/// `send` requests the stub received so far.
pub(crate) fn stub_sends(stub: &StubConnector) -> usize {
    stub.with_state(|s| s.frames.iter().filter(|f| f.op() == Some("send")).count())
}

/// The `--stub-child` process: a stub connector driven by one-line commands
/// on stdin, each answered with one `ok ...` or `err ...` line on stdout.
/// Ends at the end of stdin.
pub(crate) fn stub_child() -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let stub = rt.block_on(StubConnector::start(StubConfig::default()))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "url {}", stub.url())?;
        out.flush()?;
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            let words: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| -> anyhow::Result<u64> {
                Ok(words.get(i).context("missing argument")?.parse()?)
            };
            let reply: anyhow::Result<String> = match words.first().copied() {
                Some("handshakes") => num(1).and_then(|n| {
                    let limit = Duration::from_millis(num(2)?);
                    rt.block_on(stub_wait_handshakes(&stub, n as usize, limit))?;
                    Ok(String::new())
                }),
                Some("inject") => num(1).and_then(|m| {
                    let limit = Duration::from_millis(num(2)?);
                    let (conns, took) = rt.block_on(stub_inject(&stub, m as usize, limit))?;
                    Ok(format!("{conns} {}", took.as_micros()))
                }),
                Some("sends") => Ok(stub_sends(&stub).to_string()),
                _ => Err(anyhow!("unknown command {line:?}")),
            };
            match reply {
                Ok(text) => writeln!(out, "ok {text}")?,
                Err(e) => writeln!(out, "err {}", format!("{e:#}").replace('\n', " "))?,
            }
            out.flush()?;
        }
        stub.shutdown();
        rt.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet stub child: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) type ChildIo = Arc<Mutex<Option<(ChildStdin, BufReader<ChildStdout>)>>>;

/// The stub connector in a child process (this binary with `--stub-child`).
pub(crate) struct ChildStub {
    pub(crate) child: Child,
    pub(crate) io: ChildIo,
}

impl ChildStub {
    pub(crate) async fn start(limit: Duration) -> anyhow::Result<(ChildStub, String)> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut child = Command::new(exe)
            .arg(STUB_CHILD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the stub child process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let stub = ChildStub {
            child,
            io: Arc::new(Mutex::new(Some((stdin, stdout)))),
        };
        let first = stub.exchange(None, limit).await?;
        let url = first
            .strip_prefix("url ")
            .with_context(|| format!("the stub child said {first:?}"))?
            .to_string();
        Ok((stub, url))
    }

    /// Writes `command` (if any) and reads one answer line, bounded.
    pub(crate) async fn exchange(
        &self,
        command: Option<String>,
        limit: Duration,
    ) -> anyhow::Result<String> {
        let io = Arc::clone(&self.io);
        let task = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            let mut io = io.lock().unwrap_or_else(|e| e.into_inner());
            let (stdin, stdout) = io.as_mut().context("the stub child is closed")?;
            if let Some(command) = command {
                writeln!(stdin, "{command}")?;
                stdin.flush()?;
            }
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                bail!("the stub child exited");
            }
            Ok(line.trim_end().to_string())
        });
        within("the stub child", limit, async { task.await? }).await
    }

    /// One command; its `ok` text. The child gets `limit` and the host waits
    /// a little longer, so a slow command fails with the child's message.
    pub(crate) async fn request(&self, command: &str, limit: Duration) -> anyhow::Result<String> {
        let line = self
            .exchange(
                Some(format!("{command} {}", limit.as_millis())),
                limit + Duration::from_secs(5),
            )
            .await?;
        if let Some(text) = line.strip_prefix("ok") {
            Ok(text.trim().to_string())
        } else {
            bail!("stub child: {command}: {line}")
        }
    }

    /// Closes its stdin and waits (bounded) for it to exit.
    pub(crate) async fn finish(&mut self) {
        if let Ok(mut io) = self.io.try_lock() {
            io.take();
        }
        for _ in 0..50 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ChildStub {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) enum Stub {
    Child(ChildStub),
    InProc(StubConnector),
}

impl Stub {
    pub(crate) async fn wait_handshakes(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        match self {
            Stub::Child(c) => c.request(&format!("handshakes {n}"), limit).await.map(drop),
            Stub::InProc(s) => stub_wait_handshakes(s, n, limit).await,
        }
    }

    pub(crate) async fn inject(
        &self,
        m: usize,
        limit: Duration,
    ) -> anyhow::Result<(usize, Duration)> {
        match self {
            Stub::Child(c) => {
                let text = c.request(&format!("inject {m}"), limit).await?;
                let mut words = text.split_whitespace().map(str::parse::<u64>);
                match (words.next(), words.next()) {
                    (Some(Ok(conns)), Some(Ok(us))) => {
                        Ok((conns as usize, Duration::from_micros(us)))
                    }
                    _ => bail!("stub child: inject answered {text:?}"),
                }
            }
            Stub::InProc(s) => stub_inject(s, m, limit).await,
        }
    }

    pub(crate) async fn sends(&self, limit: Duration) -> anyhow::Result<usize> {
        match self {
            Stub::Child(c) => Ok(c.request("sends", limit).await?.parse()?),
            Stub::InProc(s) => Ok(stub_sends(s)),
        }
    }

    /// The child's memory; `None` in process.
    pub(crate) fn mem(&self) -> Option<Mem> {
        match self {
            Stub::Child(c) => Some(mem_of(Some(c.child.id()))),
            Stub::InProc(_) => None,
        }
    }
}
