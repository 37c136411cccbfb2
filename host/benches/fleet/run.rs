//! The phases of a run (spawn, ready, settle, echo, shutdown) and the report.

use super::*;

pub(crate) async fn run(opts: Opts, start: Mem) -> anyhow::Result<()> {
    let n = opts.adapters;
    let limit = opts.timeout;

    let t = Instant::now();
    let plugin = if opts.native {
        Plugin::native()?
    } else {
        match &opts.cache_dir {
            Some(dir) => Plugin::new_with(&relay_host::PluginOptions::new().cache_dir(dir))?,
            None => Plugin::new()?,
        }
    };
    let compile = t.elapsed();
    let after_plugin = mem_of(None);

    let (stub, url) = if opts.inproc_stub {
        let stub = StubConnector::start(StubConfig::default()).await?;
        let url = stub.url();
        (Stub::InProc(stub), url)
    } else {
        let (child, url) = ChildStub::start(limit).await?;
        (Stub::Child(child), url)
    };
    let after_stub = mem_of(None);

    // Spawn all, one after another (as a gateway would); each gets a task
    // that reports its first `ready`.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let fleet = Arc::new(Fleet {
        ready: ready_tx,
        received: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        echo_ok: AtomicU64::new(0),
        echo_failed: AtomicU64::new(0),
        echo_target: AtomicU64::new(u64::MAX),
        echo_last: OnceLock::new(),
        echo_done: Notify::new(),
        first_echo_error: OnceLock::new(),
        dropped: AtomicU64::new(0),
        redials: AtomicU64::new(0),
        shutting_down: AtomicBool::new(false),
    });
    let mut handles = Vec::with_capacity(n);
    let mut spawned_at = Vec::with_capacity(n);
    let mut tasks = JoinSet::new();
    let spawn_start = Instant::now();
    within("spawning the adapters", limit, async {
        for i in 0..n {
            let mut config = AdapterConfig::new(url.clone());
            config.identities = vec![Identity::new("discord", bot_id(i))];
            spawned_at.push(Instant::now());
            let (handle, events) = Adapter::spawn(&plugin, config)
                .await
                .with_context(|| format!("spawning adapter {i}"))?;
            tasks.spawn(drive(i, handle.clone(), events, Arc::clone(&fleet)));
            handles.push(handle);
        }
        Ok(())
    })
    .await?;
    let spawn_all = spawn_start.elapsed();

    let mut readies = Vec::with_capacity(n);
    let mut last_ready = spawn_start;
    within(&format!("{n} adapters to be ready"), limit, async {
        while readies.len() < n {
            match ready_rx.recv().await {
                Some((i, Ok(at))) => {
                    readies.push(at - spawned_at[i]);
                    last_ready = last_ready.max(at);
                }
                Some((i, Err(why))) => bail!("adapter {i} never got ready: {why}"),
                None => bail!("the adapter tasks ended"),
            }
        }
        Ok(())
    })
    .await
    .with_context(|| format!("{} of {n} ready", readies.len()))?;
    let all_ready = last_ready - spawn_start;
    let at_ready = mem_of(None);
    readies.sort();

    tokio::time::sleep(opts.settle).await;
    let settled = mem_of(None);
    let stub_idle = stub.mem();
    let health = within("a health snapshot", limit, async {
        Ok(handles[0].health().await?)
    })
    .await?;

    // Echo: the stub writes M messages on every connection; every adapter
    // accepts each and sends it back.
    stub.wait_handshakes(n, limit).await?;
    let total = (n * opts.messages) as u64;
    fleet.echo_target.store(total, Ordering::Relaxed);
    let echo_start = Instant::now();
    let (echo_secs, inject) = if total == 0 {
        (0.0, (0, Duration::ZERO))
    } else {
        let what = format!("{total} echo results");
        let wait_echo = within(&what, limit, async {
            fleet.echo_done.notified().await;
            Ok(())
        });
        let (injected, echoed) = tokio::join!(stub.inject(opts.messages, limit), wait_echo);
        let injected = injected?;
        if injected.0 != n {
            bail!("the stub saw {} open connections, expected {n}", injected.0);
        }
        echoed.with_context(|| {
            format!(
                "{} sent, {} failed",
                fleet.echo_ok.load(Ordering::Relaxed),
                fleet.echo_failed.load(Ordering::Relaxed)
            )
        })?;
        let last = fleet.echo_last.get().copied().unwrap_or_else(Instant::now);
        ((last - echo_start).as_secs_f64(), injected)
    };
    let echo_ok = fleet.echo_ok.load(Ordering::Relaxed);
    let echo_failed = fleet.echo_failed.load(Ordering::Relaxed);
    let stub_sends = stub.sends(limit).await?;
    let after_echo = mem_of(None);
    let stub_after_echo = stub.mem();

    // Shut everything down, concurrently and bounded.
    fleet.shutting_down.store(true, Ordering::Relaxed);
    let t = Instant::now();
    let mut shutdowns = JoinSet::new();
    for handle in handles.drain(..) {
        shutdowns.spawn(async move { handle.shutdown().await });
    }
    within("the adapters to shut down", limit, async {
        while let Some(done) = shutdowns.join_next().await {
            done??;
        }
        while let Some(done) = tasks.join_next().await {
            done?;
        }
        Ok(())
    })
    .await?;
    let shutdown = t.elapsed();
    let after_shutdown = mem_of(None);
    let stub_kind = match stub {
        Stub::Child(mut child) => {
            child.finish().await;
            "child process"
        }
        Stub::InProc(stub) => {
            stub.shutdown();
            "in process"
        }
    };

    // Report.
    let base = after_stub.rss as f64;
    let per = |m: Mem| (m.rss as f64 - base) / n as f64;
    let msgs_per_s = if echo_secs > 0.0 {
        echo_ok as f64 / echo_secs
    } else {
        0.0
    };
    let misrouted = fleet.misrouted.load(Ordering::Relaxed);
    let received = fleet.received.load(Ordering::Relaxed);
    let dropped = fleet.dropped.load(Ordering::Relaxed);
    let redials = fleet.redials.load(Ordering::Relaxed);
    let plugin_kind = if opts.native { "native" } else { "wasm" };
    let per_settled = per(settled);
    let pss_per_settled = (settled.pss as f64 - after_stub.pss as f64) / n as f64;
    let mut table = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(table, "{k:<38} {v}");
    };
    row(
        "adapters x messages",
        format!("{n} x {} ({plugin_kind}, stub {stub_kind})", opts.messages),
    );
    row("plugin compile", format!("{:.1} ms", ms(compile)));
    row("RSS at start", format!("{} KiB", start.rss));
    row("RSS after plugin", format!("{} KiB", after_plugin.rss));
    row(
        "RSS after stub (baseline)",
        format!("{} KiB", after_stub.rss),
    );
    row(
        "RSS all ready",
        format!("{} KiB ({:.1} KiB/adapter)", at_ready.rss, per(at_ready)),
    );
    row(
        "RSS settled (idle)",
        format!(
            "{} KiB = {:.1} MiB ({per_settled:.1} KiB/adapter)",
            settled.rss,
            settled.rss as f64 / 1024.0
        ),
    );
    row(
        "PSS settled (idle)",
        format!(
            "{} KiB ({pss_per_settled:.1} KiB/adapter; shared image pages counted once)",
            settled.pss
        ),
    );
    row(
        "RSS after echo",
        format!(
            "{} KiB ({:.1} KiB/adapter)",
            after_echo.rss,
            per(after_echo)
        ),
    );
    row("RSS after shutdown", format!("{} KiB", after_shutdown.rss));
    row("peak RSS (VmHWM)", format!("{} KiB", after_shutdown.hwm));
    if let (Some(idle), Some(echo)) = (stub_idle, stub_after_echo) {
        row(
            "stub child RSS idle / after echo",
            format!("{} / {} KiB", idle.rss, echo.rss),
        );
    }
    row(
        "guest linear memory (adapter 0)",
        format!("{} KiB", health.guest_memory_bytes / 1024),
    );
    row(
        "spawn all (sequential)",
        format!(
            "{:.1} ms ({:.3} ms each)",
            ms(spawn_all),
            ms(spawn_all) / n as f64
        ),
    );
    row(
        "first spawn to all ready",
        format!("{:.1} ms", ms(all_ready)),
    );
    row(
        "spawn to ready p50 / p90 / p99 / max",
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} ms",
            ms(percentile(&readies, 0.5)),
            ms(percentile(&readies, 0.9)),
            ms(percentile(&readies, 0.99)),
            ms(percentile(&readies, 1.0))
        ),
    );
    row(
        "echo",
        format!(
            "{echo_ok} ok, {echo_failed} failed in {:.1} ms = {msgs_per_s:.0} msgs/s",
            echo_secs * 1e3
        ),
    );
    row(
        "stub inbound writes done after",
        format!("{:.1} ms", ms(inject.1)),
    );
    row(
        "received / misrouted / stub saw sends",
        format!("{received} / {misrouted} / {stub_sends}"),
    );
    row("redials before ready", redials.to_string());
    row("left ready during the run", dropped.to_string());
    row("shutdown all", format!("{:.1} ms", ms(shutdown)));
    row(
        "target <= 200 KiB per idle adapter",
        if per_settled <= TARGET_PER_ADAPTER_KIB {
            "met"
        } else {
            "NOT met"
        }
        .into(),
    );
    row(
        "target 1,000 adapters < 512 MiB",
        match (n, settled.rss < TARGET_TOTAL_KIB) {
            (1000, true) => "met".into(),
            (1000, false) => "NOT met".into(),
            _ => format!("n/a (N = {n})"),
        },
    );
    print!("{table}");
    if let Some(error) = fleet.first_echo_error.get() {
        eprintln!("fleet: first echo failure: {error}");
    }
    let summary = json!({
        "bench": "fleet",
        "adapters": n,
        "messages_per_adapter": opts.messages,
        "plugin": plugin_kind,
        "stub": if opts.inproc_stub { "inproc" } else { "child" },
        "compile_ms": ms(compile),
        "rss_kib": {
            "start": start.rss, "plugin": after_plugin.rss, "stub": after_stub.rss,
            "ready": at_ready.rss, "settled": settled.rss, "echo": after_echo.rss,
            "shutdown": after_shutdown.rss,
        },
        "hwm_kib": after_shutdown.hwm,
        "per_adapter_kib": {
            "ready": per(at_ready), "settled": per_settled, "echo": per(after_echo),
        },
        "pss_kib": { "stub": after_stub.pss, "settled": settled.pss },
        "pss_per_adapter_settled_kib": pss_per_settled,
        "stub_child_rss_kib": stub_idle.map(|m| json!({
            "idle": m.rss, "echo": stub_after_echo.map(|e| e.rss),
        })),
        "guest_memory_bytes": health.guest_memory_bytes,
        "spawn_all_ms": ms(spawn_all),
        "all_ready_ms": ms(all_ready),
        "ready_ms": {
            "p50": ms(percentile(&readies, 0.5)), "p90": ms(percentile(&readies, 0.9)),
            "p99": ms(percentile(&readies, 0.99)),
            "max": ms(percentile(&readies, 1.0)),
        },
        "echo": {
            "ok": echo_ok, "failed": echo_failed, "secs": echo_secs, "msgs_per_s": msgs_per_s,
            "inject_ms": ms(inject.1), "received": received, "misrouted": misrouted,
            "stub_sends": stub_sends,
        },
        "redials_before_ready": redials,
        "left_ready": dropped,
        "shutdown_ms": ms(shutdown),
        "targets": {
            "per_adapter_le_200_kib": per_settled <= TARGET_PER_ADAPTER_KIB,
            "total_lt_512_mib": (n == 1000).then_some(settled.rss < TARGET_TOTAL_KIB),
        },
    });
    println!("{summary}");
    if echo_failed > 0 || misrouted > 0 || received != total || stub_sends as u64 != total {
        bail!(
            "echo incomplete: {echo_ok} ok, {echo_failed} failed, {received} received, \
             {misrouted} misrouted, stub saw {stub_sends} sends, expected {total}"
        );
    }
    Ok(())
}
