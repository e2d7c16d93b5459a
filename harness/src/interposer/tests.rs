//! Tests of the parent module, on real sockets and processes.
//! The interposer between real UNIX sockets: listeners in a temporary
//! directory stand for the target's cpr and main sockets, a client stream
//! for the source, and a memfd made here for the guest RAM passed across.

use super::*;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::mpsc;

use rstest::rstest;

/// The bound on anything that should happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long a socket is watched to show that nothing arrives.
const QUIET: Duration = Duration::from_millis(300);

/// A memfd whose name is unique to this process and test.
fn memfd(tag: &str) -> (memfd::Memfd, String) {
    let name = format!("cprkit-ipt-{tag}-{}", std::process::id());
    let m = memfd::MemfdOptions::default()
        .close_on_exec(false)
        .create(&name)
        .expect("memfd_create");
    m.as_file().set_len(4096).expect("memfd size");
    (m, name)
}

/// This process's fds on memfds named `name`, with their open flags (octal
/// `flags` of /proc/self/fdinfo, which shows O_CLOEXEC).
fn memfds_named(name: &str) -> Vec<(i32, i32)> {
    let want = format!("/memfd:{name} (deleted)");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
    {
        if std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str()) {
            let fd: i32 = e.file_name().to_string_lossy().parse().expect("fd number");
            let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
                continue;
            };
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
                .expect("fdinfo flags");
            out.push((fd, flags));
        }
    }
    out
}

/// Polls `cond` until it holds, at most [`WAIT`].
#[track_caller]
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One receive: bytes and fds (close-on-exec, owned here), as the interposer receives.
fn recv(s: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let (n, fds) = super::recv_cloexec(s, &mut buf)?;
    buf.truncate(n);
    Ok((buf, fds))
}

/// Reads exactly `n` bytes (each read bounded by the socket's timeout),
/// with the fds that came with them.
#[track_caller]
fn read_n(s: &UnixStream, n: usize) -> (Vec<u8>, Vec<OwnedFd>) {
    let (mut bytes, mut fds) = (Vec::new(), Vec::new());
    while bytes.len() < n {
        let (b, f) = recv(s)
            .unwrap_or_else(|e| panic!("read after {:?}: {e}", String::from_utf8_lossy(&bytes)));
        assert!(
            !b.is_empty() || !f.is_empty(),
            "EOF after {} of {n} bytes",
            bytes.len()
        );
        bytes.extend(b);
        fds.extend(f);
    }
    assert_eq!(
        bytes.len(),
        n,
        "more than expected: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    (bytes, fds)
}

/// The next read is EOF: nothing more, no fd.
#[track_caller]
fn expect_eof(s: &UnixStream) {
    let (b, f) = recv(s).expect("read");
    assert!(
        b.is_empty() && f.is_empty(),
        "wanted EOF, got {:?} and {} fds",
        String::from_utf8_lossy(&b),
        f.len()
    );
}

/// Nothing arrives (not even EOF) for [`QUIET`] on `s` (named `what`).
#[track_caller]
fn expect_quiet(s: &UnixStream, what: &str) {
    s.set_read_timeout(Some(QUIET)).unwrap();
    match recv(s) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        Err(e) => panic!("{what}: read: {e}"),
        Ok((b, f)) if b.is_empty() && f.is_empty() => panic!("{what}: EOF arrived"),
        Ok((b, f)) => panic!(
            "{what}: {:?} and {} fds arrived",
            String::from_utf8_lossy(&b),
            f.len()
        ),
    }
    s.set_read_timeout(Some(WAIT)).unwrap();
}

fn send(s: &UnixStream, bytes: &[u8]) {
    let mut w = s;
    w.write_all(bytes).expect("write");
}

fn send_fd(s: &UnixStream, bytes: &[u8], fd: &impl AsRawFd) {
    assert_eq!(
        s.send_with_fd(bytes, &[fd.as_raw_fd()]).expect("sendmsg"),
        bytes.len()
    );
}

/// A hold as compared here.
type Seen = (Step, Chan, Dir, usize, usize);

/// A decision the test makes while the hold waits: `gate(step, rx)` blocks
/// the hold at `step` until the test sends a directive (or [`WAIT`] passes);
/// any other hold is forwarded at once.
fn gate(
    step: Step,
    rx: mpsc::Receiver<Directive>,
) -> impl Fn(&Held) -> Directive + Send + Sync + 'static {
    let rx = Mutex::new(rx);
    move |h: &Held| {
        if h.step == step {
            rx.lock()
                .unwrap()
                .recv_timeout(WAIT)
                .unwrap_or(Directive::Forward)
        } else {
            Directive::Forward
        }
    }
}

/// An interposer with its two routes, the target's listeners and what the
/// hold handler was asked.
struct Rig {
    /// Holds the sockets; removed with the rig.
    _dir: tempfile::TempDir,
    routes: Vec<Route>,
    cpr: Option<UnixListener>,
    main: Option<UnixListener>,
    seen: Arc<Mutex<Vec<Held>>>,
    timeline: Timeline,
    ip: Option<Interposer>,
}

impl Rig {
    fn new(decide: impl Fn(&Held) -> Directive + Send + Sync + 'static) -> Rig {
        Rig::build(true, decide)
    }

    /// With `listen` false, the target's socket paths do not exist.
    fn build(listen: bool, decide: impl Fn(&Held) -> Directive + Send + Sync + 'static) -> Rig {
        Rig::shaped(listen, Channels::CprAndMain, decide)
    }

    /// A rig for a handover shape's channels: with [`Channels::One`], the
    /// cpr route only.
    fn shaped(
        listen: bool,
        channels: Channels,
        decide: impl Fn(&Held) -> Directive + Send + Sync + 'static,
    ) -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("ipt")
            .tempdir()
            .expect("tempdir");
        let (tcpr, tmain) = (
            dir.path().join("target-cpr.sock"),
            dir.path().join("target-main.sock"),
        );
        let (cpr, main) = if listen {
            (
                Some(UnixListener::bind(&tcpr).unwrap()),
                Some(UnixListener::bind(&tmain).unwrap()),
            )
        } else {
            (None, None)
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let on_hold: HoldHandler = Arc::new(move |h: Held| {
            log.lock().unwrap().push(h);
            decide(&h)
        });
        let timeline = Timeline::new();
        let mut routes = routes(dir.path(), &tcpr, &tmain);
        if channels == Channels::One {
            routes.truncate(1);
        }
        let ip =
            Interposer::start_shaped(&routes, &timeline, on_hold, channels).expect("interposer");
        Rig {
            _dir: dir,
            routes,
            cpr,
            main,
            seen,
            timeline,
            ip: Some(ip),
        }
    }

    fn front(&self, chan: Chan) -> &Path {
        &self.routes.iter().find(|r| r.chan == chan).unwrap().front
    }

    /// The source connects through the interposer; returns it and the
    /// target's accepted end, both with read timeouts.
    fn connect(&self, chan: Chan) -> (UnixStream, UnixStream) {
        let src = self.source(chan);
        (src, self.accept_target(chan))
    }

    fn listener(&self, chan: Chan) -> &UnixListener {
        match chan {
            Chan::Cpr => self.cpr.as_ref(),
            Chan::Main => self.main.as_ref(),
        }
        .expect("a listening target")
    }

    /// The target accepts the interposer's connection; its end, with a read timeout.
    fn accept_target(&self, chan: Chan) -> UnixStream {
        let listener = self.listener(chan);
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let n = poll(
            &mut fds,
            PollTimeout::try_from(WAIT.as_millis() as i32).unwrap(),
        )
        .expect("poll");
        assert_eq!(n, 1, "the interposer did not connect to the target");
        let (tgt, _) = listener.accept().unwrap();
        tgt.set_read_timeout(Some(WAIT)).unwrap();
        tgt
    }

    /// Makes the interposer's next connection to the target on `chan` wait:
    /// the target's socket is bound again with a backlog of 0, and one
    /// connection (returned) is left pending on it, so the interposer's
    /// connect() blocks until [`Rig::unstall`]. Until then the interposer
    /// starts no pump for that connection: whatever the source writes is all
    /// queued when the pump first reads, whatever the timing.
    fn stall(&mut self, chan: Chan) -> UnixStream {
        use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
        let path = self
            .routes
            .iter()
            .find(|r| r.chan == chan)
            .unwrap()
            .back
            .clone();
        let slot = match chan {
            Chan::Cpr => &mut self.cpr,
            Chan::Main => &mut self.main,
        };
        drop(slot.take());
        std::fs::remove_file(&path).expect("remove the target's socket");
        let fd = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        nix::sys::socket::bind(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).expect("bind");
        nix::sys::socket::listen(&fd, Backlog::new(0).unwrap()).expect("listen");
        *slot = Some(UnixListener::from(fd));
        let pending = UnixStream::connect(&path).expect("the pending connection");
        // The backlog is full: a connect() would now block.
        let probe = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("socket");
        assert_eq!(
            nix::sys::socket::connect(probe.as_raw_fd(), &UnixAddr::new(&path).unwrap()),
            Err(nix::errno::Errno::EAGAIN),
            "a connect() to the stalled target does not wait"
        );
        pending
    }

    /// Ends [`Rig::stall`]: the target accepts the pending connection, then
    /// the interposer's; returns the target's end of the latter.
    fn unstall(&self, chan: Chan, pending: UnixStream) -> UnixStream {
        let (first, _) = self
            .listener(chan)
            .accept()
            .expect("accept the pending one");
        drop((first, pending));
        self.accept_target(chan)
    }

    fn source(&self, chan: Chan) -> UnixStream {
        let src = UnixStream::connect(self.front(chan)).expect("connect to the interposer");
        src.set_read_timeout(Some(WAIT)).unwrap();
        src
    }

    fn holds(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|h| (h.step, h.chan, h.dir, h.bytes, h.fds))
            .collect()
    }

    #[track_caller]
    fn wait_hold(&self, step: Step) {
        eventually(&format!("hold at {step}"), || {
            self.seen.lock().unwrap().iter().any(|h| h.step == step)
        });
    }

    fn traffic(&self) -> &Traffic {
        self.ip.as_ref().expect("running").traffic()
    }

    /// The interposer's channel notes, in order.
    fn notes(&self) -> Vec<String> {
        self.timeline
            .entries()
            .into_iter()
            .filter_map(|e| match e.what {
                What::Channel(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// Where `note` is among the notes (waiting for it: the interposer
    /// notes what it did just after doing it).
    #[track_caller]
    fn note_index(&self, note: &str) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let notes = self.notes();
            if let Some(i) = notes.iter().position(|n| n == note) {
                return i;
            }
            assert!(Instant::now() < deadline, "no note {note:?} in {notes:#?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Drops the interposer; returns how long that took.
    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        drop(self.ip.take());
        t.elapsed()
    }
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::SeqCst)
}

// ------------------------------------------------------------------ (a)

#[test]
fn cpr_bytes_and_fd_reach_the_target_in_order() {
    let rig = Rig::new(|_| Directive::Forward);
    let (ram, _) = memfd("a");
    let (src, tgt) = rig.connect(Chan::Cpr);
    eventually("the target contacted", || {
        rig.traffic().target_contacted.load(Ordering::SeqCst)
    });

    send(&src, b"header");
    let (b, f) = read_n(&tgt, 6);
    assert_eq!((b.as_slice(), f.len()), (&b"header"[..], 0));
    assert!(
        rig.holds().is_empty(),
        "bytes without fds are not the cut-over"
    );

    send_fd(&src, b"state", &ram);
    let (b, mut f) = read_n(&tgt, 5);
    assert_eq!(b, b"state");
    assert_eq!(f.len(), 1, "the fd comes with its bytes");
    send(&src, b"trailer");
    let (b, f2) = read_n(&tgt, 7);
    assert_eq!((b.as_slice(), f2.len()), (&b"trailer"[..], 0));
    assert_eq!(
        rig.holds(),
        [(Step::CprSave, Chan::Cpr, Dir::ToTarget, 5, 1)]
    );

    // The same memfd, and a working fd on it.
    let got = File::from(f.pop().unwrap());
    let (mine, theirs) = (ram.as_file().metadata().unwrap(), got.metadata().unwrap());
    assert_eq!(
        (theirs.dev(), theirs.ino()),
        (mine.dev(), mine.ino()),
        "not the same memfd"
    );
    got.write_all_at(b"written by the target", 100).unwrap();
    let mut back = [0u8; 21];
    ram.as_file().read_exact_at(&mut back, 100).unwrap();
    assert_eq!(&back, b"written by the target");

    eventually("traffic counted", || {
        load(&rig.traffic().cpr_bytes) == 18 && load(&rig.traffic().cpr_fds) == 1
    });
    assert_eq!(load(&rig.traffic().main_bytes_to_target), 0);
    rig.note_index("1 fds crossed to the target");
}

#[test]
fn cpr_bytes_from_the_target_reach_the_source() {
    let rig = Rig::new(|_| Directive::Forward);
    let (src, tgt) = rig.connect(Chan::Cpr);
    send(&tgt, b"hello source");
    assert_eq!(read_n(&src, 12).0, b"hello source");
    assert!(rig.holds().is_empty(), "target data on cpr is no point");
}

// ------------------------------------------------------------------ (b)

#[test]
fn the_targets_cpr_eof_is_held_as_target_init_then_mirrored() {
    let (tx, rx) = mpsc::channel();
    let rig = Rig::new(gate(Step::TargetInit, rx));
    let (src, tgt) = rig.connect(Chan::Cpr);
    tgt.shutdown(Shutdown::Write).unwrap();
    rig.wait_hold(Step::TargetInit);
    expect_quiet(&src, "the source, while target-init is held");
    tx.send(Directive::Forward).unwrap();
    expect_eof(&src);
    assert_eq!(
        rig.holds(),
        [(Step::TargetInit, Chan::Cpr, Dir::ToSource, 0, 0)]
    );
    rig.note_index("EOF from target passed to source");
    // The channel still works the other way (a half-close).
    send(&src, b"late");
    assert_eq!(read_n(&tgt, 4).0, b"late");
}

#[test]
fn with_one_channel_target_init_is_the_targets_first_answer_after_the_fds() {
    // Cloud Hypervisor's shape: request/response on one socket, the memory
    // fd on a request of its own, a target that closes only at the end.
    let (tx, rx) = mpsc::channel();
    let rig = Rig::shaped(true, Channels::One, gate(Step::TargetInit, rx));
    let (ram, _) = memfd("one");
    let (src, tgt) = rig.connect(Chan::Cpr);
    send(&src, b"start");
    assert_eq!(read_n(&tgt, 5).0, b"start");
    send(&tgt, b"ok-1");
    assert_eq!(read_n(&src, 4).0, b"ok-1");
    assert!(
        rig.holds().is_empty(),
        "an answer before the fds is no point"
    );
    send_fd(&src, b"memfd", &ram);
    let (_, f) = read_n(&tgt, 5);
    assert_eq!(f.len(), 1);
    send(&tgt, b"ok-2");
    rig.wait_hold(Step::TargetInit);
    expect_quiet(&src, "the source, while target-init is held");
    tx.send(Directive::Forward).unwrap();
    assert_eq!(read_n(&src, 4).0, b"ok-2");
    send(&tgt, b"ok-3");
    assert_eq!(read_n(&src, 4).0, b"ok-3");
    assert_eq!(
        rig.holds(),
        [
            (Step::CprSave, Chan::Cpr, Dir::ToTarget, 5, 1),
            (Step::TargetInit, Chan::Cpr, Dir::ToSource, 4, 0),
        ]
    );
    // The source's close reaches the target at once, and the target's EOF is no point.
    let t = Instant::now();
    drop(src);
    expect_eof(&tgt);
    assert!(t.elapsed() < EOF_ORDER_BOUND, "{:?}", t.elapsed());
    assert_eq!(rig.holds().len(), 2);
}

// ------------------------------------------------------------------ (c)

#[test]
fn a_sources_cpr_half_close_passes_at_once() {
    // QEMU's source shuts its write side after the CPR state and waits for
    // the target's HUP; its target reads the state up to that EOF.
    let rig = Rig::new(|_| Directive::Forward);
    let (src, tgt) = rig.connect(Chan::Cpr);
    send(&src, b"state");
    assert_eq!(read_n(&tgt, 5).0, b"state");
    let half = Instant::now();
    src.shutdown(Shutdown::Write).unwrap();
    expect_eof(&tgt);
    assert!(
        half.elapsed() < EOF_ORDER_BOUND / 2,
        "the half-close waited"
    );
    tgt.shutdown(Shutdown::Write).unwrap();
    expect_eof(&src);
}

#[test]
fn the_sources_cpr_eof_waits_for_the_targets() {
    let rig = Rig::new(|_| Directive::Forward);
    let (src, tgt) = rig.connect(Chan::Cpr);
    send(&src, b"state");
    assert_eq!(read_n(&tgt, 5).0, b"state");
    src.shutdown(Shutdown::Both).unwrap();
    expect_quiet(&tgt, "the target, before its own EOF");
    assert!(rig.holds().is_empty());

    let closed = Instant::now();
    tgt.shutdown(Shutdown::Write).unwrap();
    expect_eof(&src);
    expect_eof(&tgt);
    assert!(
        closed.elapsed() < EOF_ORDER_BOUND / 2,
        "the source's EOF came by the bound, not by the order"
    );
    assert_eq!(
        rig.holds(),
        [(Step::TargetInit, Chan::Cpr, Dir::ToSource, 0, 0)]
    );
    assert!(
        rig.note_index("EOF from target passed to source")
            < rig.note_index("EOF from source passed to target"),
        "{:#?}",
        rig.notes()
    );
}

#[test]
fn a_target_that_never_closes_gets_the_sources_eof_after_the_bound() {
    let rig = Rig::new(|_| Directive::Forward);
    let (src, tgt) = rig.connect(Chan::Cpr);
    tgt.set_read_timeout(Some(EOF_ORDER_BOUND + WAIT)).unwrap();
    let t = Instant::now();
    src.shutdown(Shutdown::Both).unwrap();
    expect_eof(&tgt);
    let waited = t.elapsed();
    assert!(
        waited + Duration::from_millis(50) >= EOF_ORDER_BOUND,
        "EOF after {waited:?}, before the bound"
    );
    assert!(waited < EOF_ORDER_BOUND + WAIT / 2, "EOF after {waited:?}");
    assert!(
        rig.holds().is_empty(),
        "no target-init without the target's EOF"
    );
}

// ------------------------------------------------------------------ (d)

#[test]
fn main_first_bytes_each_way_are_held_once() {
    let rig = Rig::new(|_| Directive::Forward);
    let (src, tgt) = rig.connect(Chan::Main);
    send(&src, b"device-state");
    assert_eq!(read_n(&tgt, 12).0, b"device-state");
    assert_eq!(
        rig.holds(),
        [(Step::MainStream, Chan::Main, Dir::ToTarget, 12, 0)]
    );
    send(&tgt, b"ok");
    assert_eq!(read_n(&src, 2).0, b"ok");
    send(&src, b"more");
    assert_eq!(read_n(&tgt, 4).0, b"more");
    send(&tgt, b"fin");
    assert_eq!(read_n(&src, 3).0, b"fin");

    // A second connection: each point is held once per interposer.
    let (src2, tgt2) = rig.connect(Chan::Main);
    send(&src2, b"x");
    assert_eq!(read_n(&tgt2, 1).0, b"x");
    send(&tgt2, b"y");
    assert_eq!(read_n(&src2, 1).0, b"y");

    assert_eq!(
        rig.holds(),
        [
            (Step::MainStream, Chan::Main, Dir::ToTarget, 12, 0),
            (Step::TargetResume, Chan::Main, Dir::ToSource, 2, 0)
        ]
    );
    eventually("main traffic counted", || {
        load(&rig.traffic().main_bytes_to_target) == 17
            && load(&rig.traffic().main_bytes_to_source) == 6
    });
    assert_eq!(load(&rig.traffic().cpr_bytes), 0);
}

// ------------------------------------------------------------------ (e)

#[test]
fn drop_fds_forwards_the_bytes_only() {
    let rig = Rig::new(|h| {
        if h.step == Step::CprSave {
            Directive::DropFds
        } else {
            Directive::Forward
        }
    });
    let (ram, name) = memfd("e-drop");
    let (src, tgt) = rig.connect(Chan::Cpr);
    send_fd(&src, b"state", &ram);
    let (b, f) = read_n(&tgt, 5);
    assert_eq!((b.as_slice(), f.len()), (&b"state"[..], 0));
    assert_eq!(
        rig.holds(),
        [(Step::CprSave, Chan::Cpr, Dir::ToTarget, 5, 1)]
    );
    eventually("bytes counted", || load(&rig.traffic().cpr_bytes) == 5);
    assert_eq!(load(&rig.traffic().cpr_fds), 0);
    rig.note_index("1 fds dropped");
    // The interposer's copy is closed: only ours is left.
    eventually("the dropped fd closed", || memfds_named(&name).len() == 1);
}

#[test]
fn corrupt_flips_the_held_bytes_only() {
    let rig = Rig::new(|h| {
        if h.step == Step::MainStream {
            Directive::Corrupt
        } else {
            Directive::Forward
        }
    });
    let (src, tgt) = rig.connect(Chan::Main);
    let sent = [0x00, 0x0f, 0xff, b'a', 0x80];
    send(&src, &sent);
    let (b, _) = read_n(&tgt, sent.len());
    assert_eq!(b, sent.map(|x| x ^ 0xff));
    send(&src, b"plain");
    assert_eq!(read_n(&tgt, 5).0, b"plain");
    rig.note_index("5 bytes flipped");
}

#[rstest]
#[case::cpr_close(Chan::Cpr, Directive::Close, "closed by the kit")]
#[case::cpr_discard(Chan::Cpr, Directive::Discard, "closed: the sender was killed")]
#[case::main_close(Chan::Main, Directive::Close, "closed by the kit")]
#[case::main_discard(Chan::Main, Directive::Discard, "closed: the sender was killed")]
fn close_ends_both_sides_and_delivers_nothing(
    #[case] chan: Chan,
    #[case] d: Directive,
    #[case] note: &str,
) {
    let rig = Rig::new(move |_| d);
    let (ram, name) = memfd(&format!("e-close-{chan:?}-{d:?}"));
    let (src, tgt) = rig.connect(chan);
    match chan {
        Chan::Cpr => send_fd(&src, b"state", &ram),
        Chan::Main => send(&src, b"device-state"),
    }
    expect_eof(&tgt);
    expect_eof(&src);
    let step = if chan == Chan::Cpr {
        Step::CprSave
    } else {
        Step::MainStream
    };
    assert_eq!(rig.holds().iter().map(|h| h.0).collect::<Vec<_>>(), [step]);
    // The source's writes now fail, as on a socket whose peer is gone.
    let mut w = &src;
    assert_eq!(
        w.write_all(b"more").map_err(|e| e.kind()),
        Err(io::ErrorKind::BrokenPipe)
    );
    let t = rig.traffic();
    assert_eq!(
        (
            load(&t.cpr_bytes),
            load(&t.cpr_fds),
            load(&t.main_bytes_to_target)
        ),
        (0, 0, 0)
    );
    rig.note_index(note);
    eventually("the held fd closed", || memfds_named(&name).len() == 1);
}

// ------------------------------------------------------------------ (f)

#[test]
fn nothing_crosses_either_channel_while_a_message_is_held() {
    let (tx, rx) = mpsc::channel();
    let rig = Rig::new(gate(Step::CprSave, rx));
    let (ram, _) = memfd("f");
    let (msrc, mtgt) = rig.connect(Chan::Main);
    let (csrc, ctgt) = rig.connect(Chan::Cpr);
    // The main channel's points, passed first.
    send(&msrc, b"m1");
    assert_eq!(read_n(&mtgt, 2).0, b"m1");
    send(&mtgt, b"r1");
    assert_eq!(read_n(&msrc, 2).0, b"r1");

    send_fd(&csrc, b"state", &ram);
    rig.wait_hold(Step::CprSave);
    send(&ctgt, b"ack");
    send(&msrc, b"m2");
    send(&mtgt, b"r2");
    for (s, what) in [
        (&ctgt, "cpr to target"),
        (&csrc, "cpr to source"),
        (&mtgt, "main to target"),
        (&msrc, "main to source"),
    ] {
        expect_quiet(s, what);
    }
    tx.send(Directive::Forward).unwrap();
    let (b, f) = read_n(&ctgt, 5);
    assert_eq!((b.as_slice(), f.len()), (&b"state"[..], 1));
    assert_eq!(read_n(&csrc, 3).0, b"ack");
    assert_eq!(read_n(&mtgt, 2).0, b"m2");
    assert_eq!(read_n(&msrc, 2).0, b"r2");
    assert_eq!(
        rig.holds().iter().map(|h| h.0).collect::<Vec<_>>(),
        [Step::MainStream, Step::TargetResume, Step::CprSave]
    );
}

/// Bytes a pump had read before a hold began, and was still writing to a
/// slow reader, go on crossing during the hold: the gate is checked before
/// a forward, not held across it. The module promises that nothing crosses
/// while a message is held.
#[test]
fn eof_waits_at_the_gate_too() {
    let (tx, rx) = mpsc::channel();
    let rig = Rig::new(gate(Step::MainStream, rx));
    let (csrc, ctgt) = rig.connect(Chan::Cpr);
    let (msrc, _mtgt) = rig.connect(Chan::Main);
    send(&msrc, b"m1");
    rig.wait_hold(Step::MainStream);
    ctgt.shutdown(Shutdown::Write).unwrap();
    expect_quiet(&csrc, "the source, while main-stream is held");
    tx.send(Directive::Forward).unwrap();
    expect_eof(&csrc);
}

// ------------------------------------------------------------------ (g)

#[rstest]
#[case::no_socket(false)]
#[case::stale_socket(true)]
fn a_target_not_listening_gets_the_source_refused(#[case] stale: bool) {
    let mut rig = Rig::build(false, |_| Directive::Forward);
    if stale {
        // A socket file nobody listens on any more.
        drop(UnixListener::bind(&rig.routes[0].back).unwrap());
    }
    let (ram, name) = memfd(&format!("g-{stale}"));
    let src = rig.source(Chan::Cpr);
    send_fd(&src, b"state", &ram);
    expect_eof(&src);
    let mut w = &src;
    assert_eq!(
        w.write_all(b"more").map_err(|e| e.kind()),
        Err(io::ErrorKind::BrokenPipe)
    );
    assert!(rig.holds().is_empty());
    assert!(!rig.traffic().target_contacted.load(Ordering::SeqCst));
    let why = if stale { "ECONNREFUSED" } else { "ENOENT" };
    rig.note_index(&format!("connect to target failed: {why}"));
    eventually("the refused message's fd closed", || {
        memfds_named(&name).len() == 1
    });
    assert!(rig.stop() < Duration::from_secs(1));
}

// ------------------------------------------------------------------ (h)

#[test]
fn fds_in_the_interposers_hands_are_close_on_exec_and_never_kept() {
    const O_CLOEXEC: i32 = libc::O_CLOEXEC;
    let (ram, name) = memfd("h");
    let mine = memfds_named(&name);
    assert_eq!(mine.len(), 1);
    assert_eq!(
        mine[0].1 & O_CLOEXEC,
        0,
        "the test's memfd must not be close-on-exec, or nothing is shown"
    );

    let (tx, rx) = mpsc::channel();
    let mut rig = Rig::new(gate(Step::CprSave, rx));
    let (src, tgt) = rig.connect(Chan::Cpr);
    send_fd(&src, b"state", &ram);
    rig.wait_hold(Step::CprSave);
    let during = memfds_named(&name);
    let theirs: Vec<_> = during.iter().filter(|(fd, _)| *fd != mine[0].0).collect();
    assert_eq!(
        theirs.len(),
        1,
        "the interposer holds the fd while it is held: {during:?}"
    );
    assert_ne!(
        theirs[0].1 & O_CLOEXEC,
        0,
        "received without close-on-exec: flags {:o}",
        theirs[0].1
    );
    tx.send(Directive::Forward).unwrap();

    let (_, fds) = read_n(&tgt, 5);
    assert_eq!(fds.len(), 1);
    eventually("fd counted", || load(&rig.traffic().cpr_fds) == 1);
    // A second message with the fd, not held: passed, and not kept either.
    send_fd(&src, b"again", &ram);
    let (_, fds2) = read_n(&tgt, 5);
    assert_eq!(fds2.len(), 1);
    eventually("fds counted", || load(&rig.traffic().cpr_fds) == 2);
    drop((fds, fds2));
    eventually("the interposer's copies closed", || {
        memfds_named(&name).len() == 1
    });

    drop((src, tgt));
    rig.stop();
    assert_eq!(
        memfds_named(&name),
        mine,
        "the kit holds an extra memfd after the interposer is gone"
    );
    drop(ram);
    assert!(memfds_named(&name).is_empty());
}

// ------------------------------------------------------------------ (i)

#[test]
fn dropping_the_interposer_stops_it_promptly_with_connections_open() {
    let mut rig = Rig::new(|_| Directive::Forward);
    let (ram, _) = memfd("i");
    let (csrc, ctgt) = rig.connect(Chan::Cpr);
    let (msrc, mtgt) = rig.connect(Chan::Main);
    let (idle_src, idle_tgt) = rig.connect(Chan::Cpr);
    send_fd(&csrc, b"state", &ram);
    assert_eq!(read_n(&ctgt, 5).1.len(), 1);
    send(&msrc, b"m");
    assert_eq!(read_n(&mtgt, 1).0, b"m");
    send(&mtgt, b"r");
    assert_eq!(read_n(&msrc, 1).0, b"r");

    let took = rig.stop();
    assert!(took < Duration::from_millis(500), "stopping took {took:?}");
    // Every connection is closed, both sides.
    for s in [&csrc, &ctgt, &msrc, &mtgt, &idle_src, &idle_tgt] {
        expect_eof(s);
    }
    assert!(
        !rig.front(Chan::Cpr).exists() && !rig.front(Chan::Main).exists(),
        "front sockets left"
    );
    assert!(UnixStream::connect(rig.front(Chan::Cpr)).is_err());
}

#[test]
fn dropping_the_interposer_while_a_source_eof_waits_for_the_target() {
    let mut rig = Rig::new(|_| Directive::Forward);
    let (src, tgt) = rig.connect(Chan::Cpr);
    src.shutdown(Shutdown::Both).unwrap();
    expect_quiet(&tgt, "the target, before its own EOF");
    let took = rig.stop();
    assert!(took < Duration::from_millis(500), "stopping took {took:?}");
    expect_eof(&tgt);
}

// ------------------------------------------------------------------ (j)
// The relay is invisible to how a peer reads: each fd reaches the same read
// as without the interposer, even where the interposer reads plain bytes and
// an fd-carrying message in one go.

/// An int the kernel tells about socket `s` (`req`: FIONREAD or TIOCOUTQ).
fn sock_ioctl(s: &UnixStream, req: libc::Ioctl) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: both requests write one int through the pointer.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), req, &mut n) };
    assert_eq!(r, 0, "ioctl: {}", io::Error::last_os_error());
    usize::try_from(n).expect("a count")
}

/// The bytes queued on `s` for its reader.
fn unread_in(s: &UnixStream) -> usize {
    sock_ioctl(s, libc::FIONREAD)
}

/// The memory of what `s` sent and its peer has not read yet: 0 once the
/// peer has taken every byte.
fn unread_out(s: &UnixStream) -> usize {
    sock_ioctl(s, libc::TIOCOUTQ)
}

/// Whether `fd` is an fd on `m`.
fn same_file(fd: &OwnedFd, m: &memfd::Memfd) -> bool {
    let (a, b) = (
        nix::sys::stat::fstat(fd).expect("fstat"),
        nix::sys::stat::fstat(m.as_file()).expect("fstat"),
    );
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

/// Reads exactly `n` bytes, each read asking for no more than what is left,
/// with room for fds; the fds that came.
#[track_caller]
fn recv_exactly(s: &UnixStream, n: usize) -> (Vec<u8>, Vec<OwnedFd>) {
    let (mut bytes, mut fds) = (vec![0u8; n], Vec::new());
    let mut off = 0;
    while off < n {
        let (k, f) = super::recv_cloexec(s, &mut bytes[off..]).expect("read");
        assert!(k > 0, "EOF after {off} of {n} bytes");
        off += k;
        fds.extend(f);
    }
    (bytes, fds)
}

/// The files whose fds a sender passes, told apart by inode.
struct Files(Vec<memfd::Memfd>);

impl Files {
    fn new(tag: &str, n: usize) -> Files {
        Files((0..n).map(|i| memfd(&format!("{tag}-{i}")).0).collect())
    }

    /// Which of the files `fd` is on.
    #[track_caller]
    fn which(&self, fd: &OwnedFd) -> usize {
        self.0
            .iter()
            .position(|m| same_file(fd, m))
            .expect("an fd on none of the files sent")
    }
}

/// One write of a sender: bytes, and the files (by index) whose fds go with
/// them in the same sendmsg (none: a plain write).
struct Msg(Vec<u8>, Vec<usize>);

/// `n` bytes that differ from those of another message (`seed`).
fn bytes(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| seed.wrapping_add((i % 251) as u8)).collect()
}

/// What the VMMs send on their channels, and more: fds alone with one byte
/// (QEMU), a header written plainly and then its body with an fd (Cloud
/// Hypervisor), two fds in one message, two fd messages in a row, and a
/// message longer than one segment (its fds ride the first).
fn script() -> Vec<Msg> {
    vec![
        Msg(bytes(1, 5), vec![]),
        Msg(bytes(2, 1), vec![0]),
        Msg(bytes(3, 16), vec![]),
        Msg(bytes(4, 4), vec![1]),
        Msg(bytes(5, 8), vec![]),
        Msg(bytes(6, 3), vec![2, 3]),
        Msg(bytes(7, 2), vec![4]),
        Msg(bytes(8, 40_000), vec![5]),
        Msg(bytes(9, 7), vec![]),
    ]
}

const SCRIPT_FILES: usize = 6;

fn script_len(msgs: &[Msg]) -> usize {
    msgs.iter().map(|m| m.0.len()).sum()
}

fn send_script(s: &UnixStream, msgs: &[Msg], files: &Files) {
    for Msg(b, fds) in msgs {
        if fds.is_empty() {
            send(s, b);
        } else {
            let raw: Vec<RawFd> = fds.iter().map(|&i| files.0[i].as_raw_fd()).collect();
            assert_eq!(s.send_with_fd(b, &raw).expect("sendmsg"), b.len());
        }
    }
}

/// How a reader reads: each read asks for the rest of the message it is in,
/// for 64 KiB, or for so many bytes.
#[derive(Debug, Clone, Copy)]
enum Reads {
    Messages,
    Big,
    Small(usize),
}

/// What one read got: how many bytes, and the files of the fds that came.
type Got = (usize, Vec<usize>);

/// Reads the whole script (all queued already) as `how` says; what each read
/// got, and all the bytes.
fn read_script(s: &UnixStream, msgs: &[Msg], files: &Files, how: Reads) -> (Vec<Got>, Vec<u8>) {
    let total = script_len(msgs);
    let ends: Vec<usize> = msgs
        .iter()
        .scan(0, |end, m| {
            *end += m.0.len();
            Some(*end)
        })
        .collect();
    let (mut reads, mut all) = (Vec::new(), Vec::new());
    while all.len() < total {
        let off = all.len();
        let want = match how {
            Reads::Messages => ends.iter().find(|&&e| e > off).unwrap() - off,
            Reads::Big => 64 * 1024,
            Reads::Small(n) => n,
        };
        let mut buf = vec![0u8; want.min(total - off)];
        let (n, fds) = super::recv_cloexec(s, &mut buf).expect("read");
        assert!(n > 0, "EOF after {off} of {total} bytes");
        all.extend_from_slice(&buf[..n]);
        reads.push((n, fds.iter().map(|f| files.which(f)).collect()));
    }
    (reads, all)
}

/// The script read as `how` says straight from a socket pair: what a peer
/// gets without the interposer.
fn direct(msgs: &[Msg], files: &Files, how: Reads) -> Vec<Got> {
    let (a, b) = UnixStream::pair().expect("socketpair");
    send_script(&a, msgs, files);
    let (reads, all) = read_script(&b, msgs, files, how);
    assert_eq!(
        all,
        msgs.iter().flat_map(|m| m.0.clone()).collect::<Vec<_>>()
    );
    // The kernel's rule, which the relay must keep: the fds of a message
    // come with the read that covers its first byte.
    let mut starts = Vec::new();
    let mut at = 0;
    for m in msgs {
        starts.push((at, &m.1));
        at += m.0.len();
    }
    let mut off = 0;
    for (n, fds) in &reads {
        let want: Vec<usize> = starts
            .iter()
            .filter(|(s, _)| (off..off + n).contains(s))
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        assert_eq!(fds, &want, "the read of bytes {off}..{}", off + n);
        off += n;
    }
    reads
}

/// The script through the interposer, read as `how` says once it has all
/// crossed, matches the reads without it.
#[track_caller]
fn assert_reads_as_direct(to: &UnixStream, msgs: &[Msg], files: &Files, how: Reads) {
    let want = direct(msgs, files, how);
    let total = script_len(msgs);
    eventually("the script queued at the reader", || unread_in(to) == total);
    let (got, all) = read_script(to, msgs, files, how);
    assert!(
        all == msgs.iter().flat_map(|m| m.0.clone()).collect::<Vec<_>>(),
        "other bytes crossed"
    );
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        let at: usize = want.iter().take(i).map(|r| r.0).sum();
        panic!(
            "read {i} (from byte {at}) through the interposer got {:?}, without it {:?} \
             ({how:?}; {} reads and {}; fds through it: {:?}; without: {:?})",
            got.get(i),
            want.get(i),
            got.len(),
            want.len(),
            with_fds(&got),
            with_fds(&want),
        );
    }
}

/// The reads that got fds: where they began, and the fds.
fn with_fds(reads: &[Got]) -> Vec<(usize, &[usize])> {
    let mut at = 0;
    let mut out = Vec::new();
    for (n, fds) in reads {
        if !fds.is_empty() {
            out.push((at, fds.as_slice()));
        }
        at += n;
    }
    out
}

#[test]
fn a_header_read_plainly_leaves_the_fd_to_the_read_after_it() {
    // Cloud Hypervisor's cpr: the sender writes a 16-byte header with a plain
    // write, then 4 bytes with the memfd; the receiver reads the header with
    // a plain read (no room for fds), then the 4 bytes with room for them.
    let mut rig = Rig::new(|_| Directive::Forward);
    let (ram, _) = memfd("j-header");
    let pending = rig.stall(Chan::Cpr);
    let src = rig.source(Chan::Cpr);
    let header = *b"cpr-header-16-by";
    send(&src, &header);
    send_fd(&src, b"body", &ram);
    let tgt = rig.unstall(Chan::Cpr, pending);

    let mut got = [0u8; 16];
    (&tgt)
        .read_exact(&mut got)
        .expect("the header, read plainly");
    assert_eq!(got, header);
    let (body, fds) = recv_exactly(&tgt, 4);
    assert_eq!(body, b"body");
    assert_eq!(
        fds.len(),
        1,
        "the memfd did not come with the body (the plain header read took it)"
    );
    assert!(same_file(&fds[0], &ram), "not the memfd sent");
    // The interposer read the two in one go (the case it must split), and
    // held them as one message.
    assert_eq!(
        rig.holds(),
        [(Step::CprSave, Chan::Cpr, Dir::ToTarget, 20, 1)]
    );
    eventually("traffic counted", || {
        load(&rig.traffic().cpr_bytes) == 20 && load(&rig.traffic().cpr_fds) == 1
    });
    rig.note_index("1 fds crossed to the target");
}

#[rstest]
#[case::by_message(Reads::Messages)]
#[case::big_reads(Reads::Big)]
#[case::small_reads(Reads::Small(3))]
fn fds_of_many_messages_each_reach_the_read_they_would_without_the_interposer(#[case] how: Reads) {
    let msgs = script();
    let files = Files::new(&format!("j-many-{how:?}"), SCRIPT_FILES);
    let mut rig = Rig::new(|_| Directive::Forward);
    let pending = rig.stall(Chan::Cpr);
    let src = rig.source(Chan::Cpr);
    send_script(&src, &msgs, &files);
    let tgt = rig.unstall(Chan::Cpr, pending);
    assert_reads_as_direct(&tgt, &msgs, &files, how);
    eventually("traffic counted", || {
        load(&rig.traffic().cpr_bytes) == script_len(&msgs) as u64
            && load(&rig.traffic().cpr_fds) == SCRIPT_FILES as u64
    });
}

#[rstest]
#[case::main_to_target(Chan::Main, Dir::ToTarget)]
#[case::main_to_source(Chan::Main, Dir::ToSource)]
#[case::cpr_to_target(Chan::Cpr, Dir::ToTarget)]
#[case::cpr_to_source(Chan::Cpr, Dir::ToSource)]
fn fds_reach_the_same_reads_on_either_channel_either_way(#[case] chan: Chan, #[case] dir: Dir) {
    for how in [Reads::Messages, Reads::Big] {
        let msgs = script();
        let files = Files::new(&format!("j-way-{chan:?}-{dir:?}-{how:?}"), SCRIPT_FILES);
        let (tx, rx) = mpsc::channel();
        let rig = Rig::new(gate(Step::MainStream, rx));
        // While main-stream is held nothing crosses: the pump of the way under
        // test stops after a first byte, and the script queues behind it.
        let (msrc, mtgt) = rig.connect(Chan::Main);
        send(&msrc, b"m");
        rig.wait_hold(Step::MainStream);
        let (src, tgt) = match chan {
            Chan::Main => (msrc.try_clone().unwrap(), mtgt.try_clone().unwrap()),
            Chan::Cpr => rig.connect(Chan::Cpr),
        };
        let (from, to) = match dir {
            Dir::ToTarget => (src, tgt),
            Dir::ToSource => (tgt, src),
        };
        let first = if (chan, dir) == (Chan::Main, Dir::ToTarget) {
            // The held message itself.
            b"m"
        } else {
            send(&from, b"p");
            eventually("the first byte taken by the interposer", || {
                unread_out(&from) == 0
            });
            b"p"
        };
        send_script(&from, &msgs, &files);
        tx.send(Directive::Forward).unwrap();
        let (b, f) = recv_exactly(&to, 1);
        assert_eq!((b.as_slice(), f.len()), (&first[..], 0));
        assert_reads_as_direct(&to, &msgs, &files, how);
        drop((msrc, mtgt));
    }
}

#[test]
fn an_fd_segment_the_read_buffer_cuts_crosses_whole() {
    let mut rig = Rig::new(|_| Directive::Forward);
    let (ram, _) = memfd("j-cut");
    let pending = rig.stall(Chan::Cpr);
    let src = rig.source(Chan::Cpr);
    // Room to queue more than the interposer reads at a time.
    nix::sys::socket::setsockopt(&src, nix::sys::socket::sockopt::SndBuf, &(1 << 20))
        .expect("SO_SNDBUF");
    src.set_write_timeout(Some(WAIT)).unwrap();
    // A message with an fd that starts before the end of the interposer's
    // buffer and ends after it.
    let plain = bytes(1, super::READ_BUF - 4000);
    let seg = bytes(2, 8000);
    send(&src, &plain);
    send_fd(&src, &seg, &ram);
    let tgt = rig.unstall(Chan::Cpr, pending);

    let (b, f) = recv_exactly(&tgt, plain.len());
    assert!(b == plain, "other bytes crossed");
    assert_eq!(f.len(), 0, "the fd came early");
    // One read with room for more gets the message whole, with its fd, as
    // it would without the interposer.
    let mut buf = vec![0u8; 64 * 1024];
    let (n, fds) = super::recv_cloexec(&tgt, &mut buf).expect("read");
    assert_eq!((n, fds.len()), (seg.len(), 1));
    assert!(buf[..n] == seg[..], "other bytes crossed");
    assert!(same_file(&fds[0], &ram), "not the memfd sent");
    assert_eq!(
        rig.holds(),
        [(Step::CprSave, Chan::Cpr, Dir::ToTarget, 8000, 1)]
    );
}
