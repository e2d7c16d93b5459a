//! The channel interposer: the kit's man in the middle on the cpr and main
//! channels. The source is given the interposer's sockets; for each connection
//! the interposer connects to the target's real socket and forwards both ways,
//! bytes and SCM_RIGHTS fds in order, EOF mirrored as a half-close (the source
//! waits for the target to close the cpr socket, so that EOF is a signal).
//!
//! At four exact points it *holds* the message in hand and asks the kit what to
//! do (the kit samples the VMMs meanwhile, and decides the fault):
//!
//! | point           | channel | what is held                                 |
//! |-----------------|---------|----------------------------------------------|
//! | `cpr-save`      | cpr     | the first message carrying fds (the cut-over) |
//! | `target-init`   | cpr     | the target's EOF (it has loaded the CPR state) |
//! | `main-stream`   | main    | the first bytes from the source               |
//! | `target-resume` | main    | the first bytes from the target               |
//!
//! With one channel (a handover shape where one socket carries the fds and
//! all the state, [`crate::adapter::Channels::One`]) the interposer has the
//! cpr route only, and `target-init` is the target's first message after the
//! fds crossed (its answer to the message that passed them: it holds them
//! then; the kit checks its fd table), not its EOF: such a target closes only
//! at the end. The source's EOF then passes at once.
//!
//! Each point is held once. While a message is held, nothing else starts to
//! cross either channel in either direction (data, fds or EOF wait at a gate):
//! the kit acts on a frozen exchange, and what follows the release comes after
//! it. The one exception is a chunk a pump already had in hand and was writing
//! when the hold began (a bulk stream to a slow reader): it finishes; waiting
//! for it could wait on a reader that never reads.
//! Holding a channel, never a timer, is what makes the fault points exact.
//!
//! On the cpr channel, when the source goes away (closes its socket), the
//! target learns it only after its own EOF has been held and released
//! (target-init): a source cancelled or failed early is then seen by the target
//! after the kit has looked at it at target-init, never racing that look. A
//! target that never closes learns it after [`EOF_ORDER_BOUND`]. A source that
//! only half-closes (shuts its write side, and still waits for the target's
//! HUP, as QEMU does after writing the CPR state) is passed on at once.
//!
//! The relay is invisible to how a peer reads: every fd reaches the peer on a
//! read that covers the same bytes as it would without the interposer, on
//! both channels, both ways. On a UNIX stream socket each sendmsg is queued as
//! one or more segments (skbs, up to ~36 KiB each), its fds on the first; a
//! read glues segments together, stops right after one that carries fds, and
//! those fds go to the first read that touches any of its bytes (a read
//! without room for them closes them). So one read here may take plain bytes
//! and then an fd-carrying segment (a header written plainly, then its body
//! with an fd); sent on with the fds on the first byte, they would go to the
//! peer's read of the header, which would lose them. Instead the interposer
//! finds where that segment begins in what it read, sends the bytes before it
//! plainly and the segment with its fds in one sendmsg: the kernel makes it
//! one segment again, so the peer's reads get the fds, and stop, where they
//! would without the interposer.
//!
//! Finding that start takes nothing from the socket. A first peek (MSG_PEEK)
//! shows how far a read would go and whether fds come with it. Peeks of
//! shorter lengths cannot tell where the fds' segment starts: once a peek has
//! its bytes, it goes on through the queue to the first segment with fds and
//! shows them anyway. What can: a peek whose buffer ends on a page that cannot
//! be written. The kernel copies segment by segment, the one that reaches the
//! bad page fails as a whole (EFAULT), and the peek returns the bytes of the
//! segments before it: with the last byte of the first peek on the bad page,
//! that is where the fd-carrying segment begins. Then exactly the bytes of
//! the first peek are read, which touches no segment after them. When the
//! read buffer cuts the fd-carrying segment, the bytes before it cross first
//! and the segment whole with the next read. A chunk without fds costs one
//! peek more than a plain read; one with fds, two.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use sendfd::SendWithFd;

use crate::adapter::Channels;
use crate::steps::Step;
use crate::timeline::{Actor, Timeline, What};

/// The two channels of a cpr-transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chan {
    Cpr,
    Main,
}

impl Chan {
    fn actor(self) -> Actor {
        match self {
            Chan::Cpr => Actor::Cpr,
            Chan::Main => Actor::Main,
        }
    }
}

/// Which way a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToTarget,
    ToSource,
}

/// What the kit tells the interposer to do with a held message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Forward it as it is.
    Forward,
    /// Forward the bytes, close the fds (`cpr-drop-fds`).
    DropFds,
    /// Flip every byte, then forward (`main-corrupt`).
    Corrupt,
    /// Close both sides of this channel; the held message is not forwarded.
    Close,
    /// The sender was killed at this point: it never sent the message. Closes
    /// the channel like `Close`.
    Discard,
}

impl Directive {
    /// What the interposer does, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Directive::Forward => "forward the held message",
            Directive::DropFds => "forward the bytes, drop the fds",
            Directive::Corrupt => "forward the bytes flipped",
            Directive::Close => "close the channel",
            Directive::Discard => "discard the message (its sender is dead), close the channel",
        }
    }
}

/// A message the interposer holds at a point.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub step: Step,
    pub chan: Chan,
    pub dir: Dir,
    pub bytes: usize,
    pub fds: usize,
}

impl Held {
    /// The timeline actor of the held message's channel.
    pub fn chan_actor(&self) -> Actor {
        self.chan.actor()
    }
}

/// Decides what to do with a held message; called from an interposer thread,
/// which waits for the answer.
pub type HoldHandler = Arc<dyn Fn(Held) -> Directive + Send + Sync>;

/// Where the interposer listens (front, given to the source) and where it
/// connects (back, the target's real socket).
#[derive(Debug, Clone)]
pub struct Route {
    pub chan: Chan,
    pub front: PathBuf,
    pub back: PathBuf,
}

/// Counters of what crossed, for the figures.
#[derive(Debug, Default)]
pub struct Traffic {
    pub cpr_bytes: AtomicU64,
    pub cpr_fds: AtomicU64,
    pub main_bytes_to_target: AtomicU64,
    pub main_bytes_to_source: AtomicU64,
    /// The interposer reached the target's cpr socket.
    pub target_contacted: AtomicBool,
}

struct Shared {
    timeline: Timeline,
    on_hold: HoldHandler,
    stop: OwnedFd,
    held: [AtomicBool; 4],
    traffic: Traffic,
    /// True while a message is held: every other forward waits.
    gate: (Mutex<bool>, Condvar),
    /// The channels of the handover's shape.
    channels: Channels,
}

impl Shared {
    /// Waits until no message is held (returns early when stopping); returns
    /// the gate's lock, still held.
    fn wait_gate_open(&self) -> std::sync::MutexGuard<'_, bool> {
        let mut held = self.gate.0.lock().expect("gate lock");
        while *held && !stopping(&self.stop) {
            held = self
                .gate
                .1
                .wait_timeout(held, Duration::from_millis(50))
                .expect("gate lock")
                .0;
        }
        held
    }

    /// Waits until no message is held (returns early when stopping).
    fn pass_gate(&self) {
        drop(self.wait_gate_open());
    }

    /// Closes the gate for a hold (after any hold in progress ends).
    fn close_gate(&self) {
        *self.wait_gate_open() = true;
    }

    fn open_gate(&self) {
        *self.gate.0.lock().expect("gate lock") = false;
        self.gate.1.notify_all();
    }
}

/// Whether the stop pipe has been written.
fn stopping(stop: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// A running interposer. Dropping it stops every thread and closes every socket.
pub struct Interposer {
    shared: Arc<Shared>,
    fronts: Vec<PathBuf>,
    stop_tx: Option<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
}

impl Interposer {
    /// Binds the front sockets (so the source can connect at once) and starts serving.
    pub fn start(routes: &[Route], timeline: &Timeline, on_hold: HoldHandler) -> io::Result<Self> {
        Self::start_shaped(routes, timeline, on_hold, Channels::CprAndMain)
    }

    /// [`Interposer::start`] for a handover with these channels (with
    /// [`Channels::One`], target-init is the target's first answer after the
    /// fds crossed; see the module documentation).
    pub fn start_shaped(
        routes: &[Route],
        timeline: &Timeline,
        on_hold: HoldHandler,
        channels: Channels,
    ) -> io::Result<Self> {
        let (stop_rx, stop_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let shared = Arc::new(Shared {
            timeline: timeline.clone(),
            on_hold,
            stop: stop_rx,
            held: Default::default(),
            traffic: Traffic::default(),
            gate: Default::default(),
            channels,
        });
        let mut interposer = Interposer {
            shared,
            fronts: Vec::new(),
            stop_tx: Some(stop_tx),
            threads: Vec::new(),
        };
        for r in routes {
            interposer.open(r)?;
        }
        Ok(interposer)
    }

    /// Binds one more route's front socket and serves it (the main channel is
    /// opened once the target listens on its own: before, a source connecting
    /// finds no socket, as it would find none at the target's path).
    pub fn open(&mut self, route: &Route) -> io::Result<()> {
        let listener = UnixListener::bind(&route.front)?;
        let shared = Arc::clone(&self.shared);
        let r = route.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name("interposer-accept".into())
                .spawn(move || accept_loop(listener, r, shared))?,
        );
        self.fronts.push(route.front.clone());
        Ok(())
    }

    /// The target is gone: a new connection from the source now fails as it
    /// would on the target's own socket (the front paths are removed: ENOENT),
    /// instead of being accepted and then closed.
    pub fn refuse_new_connections(&self) {
        for f in &self.fronts {
            let _ = std::fs::remove_file(f);
        }
    }

    pub fn traffic(&self) -> &Traffic {
        &self.shared.traffic
    }

    /// Stops every thread and closes every connection.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = nix::unistd::write(&tx, b"x");
            // Keep the write end open until the threads are gone: a closed pipe
            // also reads as ready, but one byte is enough.
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Interposer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `fd` is readable; false when the interposer is stopping.
fn wait_readable(fd: &impl AsFd, stop: &OwnedFd) -> bool {
    loop {
        let mut fds = [
            PollFd::new(fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                    return false;
                }
                if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                    return true;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn accept_loop(listener: UnixListener, route: Route, shared: Arc<Shared>) {
    let actor = route.chan.actor();
    let mut pumps = Vec::new();
    while wait_readable(&listener, &shared.stop) {
        let Ok((front, _)) = listener.accept() else {
            continue;
        };
        shared
            .timeline
            .record(actor, What::Channel("source connected".into()));
        let back = match UnixStream::connect(&route.back) {
            Ok(b) => b,
            Err(e) => {
                shared.timeline.record(
                    actor,
                    What::Channel(format!("connect to target failed: {}", errno_name(&e))),
                );
                refuse(&front, &shared);
                continue;
            }
        };
        shared
            .timeline
            .record(actor, What::Channel("connected to target".into()));
        if route.chan == Chan::Cpr {
            shared
                .traffic
                .target_contacted
                .store(true, Ordering::SeqCst);
        }
        let pair = Arc::new(Pair {
            front,
            back,
            closed: AtomicBool::new(false),
            target_done: Default::default(),
        });
        for dir in [Dir::ToTarget, Dir::ToSource] {
            let pair = Arc::clone(&pair);
            let shared = Arc::clone(&shared);
            let chan = route.chan;
            if let Ok(h) = std::thread::Builder::new()
                .name("interposer-pump".into())
                .spawn(move || pump(chan, dir, pair, shared))
            {
                pumps.push(h);
            }
        }
    }
    for p in pumps {
        let _ = p.join();
    }
    let _ = std::fs::remove_file(&route.front);
}

/// The target is not there: takes the source's first message (so that its
/// sending never races the close), drops it, and closes the connection.
fn refuse(front: &UnixStream, shared: &Shared) {
    let mut fds = [PollFd::new(front.as_fd(), PollFlags::POLLIN)];
    let bound =
        PollTimeout::try_from(EOF_ORDER_BOUND.as_millis() as i32).unwrap_or(PollTimeout::NONE);
    if poll(&mut fds, bound).is_ok_and(|n| n > 0) {
        let mut buf = vec![0u8; 64 * 1024];
        // The fds received here close as the result drops.
        let _ = recv_cloexec(front, &mut buf);
    }
    shared.pass_gate();
    let _ = front.shutdown(Shutdown::Both);
}

/// One source connection and its connection to the target.
struct Pair {
    front: UnixStream,
    back: UnixStream,
    closed: AtomicBool,
    /// The target's side has ended (its EOF released, or its pump gone).
    target_done: (Mutex<bool>, Condvar),
}

impl Pair {
    fn ends(&self, dir: Dir) -> (&UnixStream, &UnixStream) {
        match dir {
            Dir::ToTarget => (&self.front, &self.back),
            Dir::ToSource => (&self.back, &self.front),
        }
    }

    /// Closes both connections both ways (a channel fault, or a side gone).
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.front.shutdown(Shutdown::Both);
        let _ = self.back.shutdown(Shutdown::Both);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn set_target_done(&self) {
        *self.target_done.0.lock().expect("pair lock") = true;
        self.target_done.1.notify_all();
    }

    /// Waits (bounded) until the target's side has ended or the pair is closed.
    fn wait_target_done(&self) {
        let deadline = Instant::now() + EOF_ORDER_BOUND;
        let mut done = self.target_done.0.lock().expect("pair lock");
        while !*done && !self.is_closed() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            done = self
                .target_done
                .1
                .wait_timeout(done, left.min(Duration::from_millis(20)))
                .expect("pair lock")
                .0;
        }
    }
}

fn hold_index(step: Step) -> usize {
    match step {
        Step::CprSave => 0,
        Step::TargetInit => 1,
        Step::MainStream => 2,
        _ => 3,
    }
}

/// Asks the kit about the message at `step`, once per point, with the gate
/// closed: nothing else crosses until the kit has answered.
fn hold(shared: &Shared, step: Step, chan: Chan, dir: Dir, bytes: usize, fds: usize) -> Directive {
    if shared.held[hold_index(step)].swap(true, Ordering::SeqCst) {
        shared.pass_gate();
        return Directive::Forward;
    }
    shared.close_gate();
    let d = (shared.on_hold)(Held {
        step,
        chan,
        dir,
        bytes,
        fds,
    });
    shared.open_gate();
    d
}

/// The most fds one message can carry (the kernel's SCM_MAX_FD): with room
/// for all of them, none is lost to a short control buffer.
const MAX_FDS: usize = 253;

/// How many bytes a pump reads at most at a time.
const READ_BUF: usize = 256 * 1024;

/// How long the source's cpr EOF waits for the target's own EOF at most.
pub const EOF_ORDER_BOUND: Duration = Duration::from_secs(2);

fn pump(chan: Chan, dir: Dir, pair: Arc<Pair>, shared: Arc<Shared>) {
    pump_until_eof(chan, dir, &pair, &shared);
    if dir == Dir::ToSource {
        pair.set_target_done();
    }
}

fn pump_until_eof(chan: Chan, dir: Dir, pair: &Pair, shared: &Shared) {
    let actor = chan.actor();
    let (from, to) = pair.ends(dir);
    let (from_name, to_name) = match dir {
        Dir::ToTarget => ("source", "target"),
        Dir::ToSource => ("target", "source"),
    };
    let mut buf = vec![0u8; READ_BUF];
    let mut first_data = true;
    loop {
        if !wait_readable(from, &shared.stop) {
            break;
        }
        let Chunk { n, fds_at, fds } = match recv_chunk(from, &mut buf) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if !pair.is_closed() {
                    shared.timeline.record(
                        actor,
                        What::Channel(format!("read from {from_name}: {}", errno_name(&e))),
                    );
                }
                Chunk::default()
            }
        };
        if pair.is_closed() {
            break;
        }
        let one = shared.channels == Channels::One;
        if n == 0 && fds.is_empty() {
            // EOF: the point where the target has loaded the CPR state and closed.
            if chan == Chan::Cpr && dir == Dir::ToSource && !one {
                let d = hold(shared, Step::TargetInit, chan, dir, 0, 0);
                if apply_close(d, pair, shared, actor) {
                    break;
                }
            }
            // A half-close (the source still waits for the target's HUP) is
            // the end of the CPR state, which a target may read up to (QEMU's
            // does): it passes at once. A full close (the source gone) waits.
            if chan == Chan::Cpr && dir == Dir::ToTarget && !one && peer_gone(from) {
                pair.wait_target_done();
            }
            shared.pass_gate();
            if !pair.is_closed() {
                let _ = to.shutdown(Shutdown::Write);
                shared.timeline.record(
                    actor,
                    What::Channel(format!("EOF from {from_name} passed to {to_name}")),
                );
            }
            break;
        }
        let step = match (chan, dir) {
            (Chan::Cpr, Dir::ToTarget) if !fds.is_empty() => Some(Step::CprSave),
            // One channel: the target's first answer once the fds crossed.
            (Chan::Cpr, Dir::ToSource)
                if one && shared.held[hold_index(Step::CprSave)].load(Ordering::SeqCst) =>
            {
                Some(Step::TargetInit)
            }
            (Chan::Main, Dir::ToTarget) if first_data => Some(Step::MainStream),
            (Chan::Main, Dir::ToSource) if first_data => Some(Step::TargetResume),
            _ => None,
        };
        first_data = false;
        let directive = match step {
            Some(step) => hold(shared, step, chan, dir, n, fds.len()),
            None => {
                shared.pass_gate();
                Directive::Forward
            }
        };
        if apply_close(directive, pair, shared, actor) || pair.is_closed() {
            break;
        }
        let data = &mut buf[..n];
        let mut pass: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        match directive {
            Directive::Corrupt => {
                data.iter_mut().for_each(|b| *b ^= 0xff);
                shared
                    .timeline
                    .record(actor, What::Channel(format!("{n} bytes flipped")));
            }
            Directive::DropFds => {
                shared
                    .timeline
                    .record(actor, What::Channel(format!("{} fds dropped", pass.len())));
                pass.clear();
            }
            _ => {}
        }
        if let Err(e) = send_all(to, data, &pass, fds_at) {
            // As with a real socket whose reader went away: the writer's next
            // writes fail, and what the other side already sent still arrives.
            shared.timeline.record(
                actor,
                What::Channel(format!("{to_name} gone ({}): stop reading", errno_name(&e))),
            );
            let _ = from.shutdown(Shutdown::Read);
            break;
        }
        count(&shared.traffic, chan, dir, n, pass.len());
        if !pass.is_empty() {
            shared.timeline.record(
                actor,
                What::Channel(format!("{} fds crossed to the {to_name}", pass.len())),
            );
        }
        // Our copies of the passed fds close here, as `fds` drops.
    }
}

/// Whether the peer of `s` has closed its socket entirely (POLLHUP), not only
/// its write side.
fn peer_gone(s: &UnixStream) -> bool {
    let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

/// Applies a closing directive; true when the channel is now closed.
fn apply_close(d: Directive, pair: &Pair, shared: &Shared, actor: Actor) -> bool {
    match d {
        Directive::Close | Directive::Discard => {
            pair.close();
            let why = if d == Directive::Close {
                "closed by the kit"
            } else {
                "closed: the sender was killed"
            };
            shared.timeline.record(actor, What::Channel(why.into()));
            true
        }
        _ => false,
    }
}

/// Receives bytes and fds; the fds are close-on-exec from the start, so a VMM
/// the kit spawns meanwhile (for another trial) never inherits them.
fn recv_cloexec(from: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    recv_with(from, buf, MsgFlags::empty())
}

/// One recvmsg with `flags` (and MSG_CMSG_CLOEXEC): the bytes, and the fds.
fn recv_with(
    from: &UnixStream,
    buf: &mut [u8],
    flags: MsgFlags,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(
        from.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these fds for us; nobody else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

/// What a pump read: `n` bytes, and the fds that came with them, which their
/// sender attached at byte `fds_at` (the start of the segment they rode; it
/// ends at `n`). `n` 0 without fds is EOF.
#[derive(Default)]
struct Chunk {
    n: usize,
    fds_at: usize,
    fds: Vec<OwnedFd>,
}

/// Reads the next chunk into `buf`, and where in it its fds were sent (see
/// the module's doc). Only this pump reads `from`, so what the peeks saw is
/// still there when the bytes are taken; a sender may only add after it.
fn recv_chunk(from: &UnixStream, buf: &mut [u8]) -> io::Result<Chunk> {
    // A peek glues segments as a read does and stops after one with fds; but
    // once it has filled `buf`, it goes on (copying nothing) to the first
    // segment with fds, however far, and shows them too.
    let (n, peeked) = recv_with(from, buf, MsgFlags::MSG_PEEK)?;
    if n == 0 {
        return Ok(Chunk::default());
    }
    if peeked.is_empty() {
        // No fds anywhere in what is queued, so none come with these bytes.
        let fds = take(from, &mut buf[..n])?;
        return Ok(Chunk { n, fds_at: 0, fds });
    }
    drop(peeked);
    // Where the segment holding the last byte begins: when the peek did not
    // fill `buf`, that segment carries the fds and ends at `n`.
    let last_at = if n == 1 {
        0
    } else {
        segment_start(from, buf, n - 1)?
    };
    if n == buf.len() && last_at > 0 {
        // The buffer may cut that segment, or the fds may be further on:
        // take the bytes before it now (they carry none), the rest next time.
        let fds = take(from, &mut buf[..last_at])?;
        return Ok(Chunk {
            n: last_at,
            fds_at: 0,
            fds,
        });
    }
    let fds = take(from, &mut buf[..n])?;
    Ok(Chunk {
        n,
        fds_at: last_at,
        fds,
    })
}

/// Where the queued segment that holds byte `at` of `from` begins, found
/// without taking anything: a peek of `at + 1` bytes, the last of which is to
/// land on a page that cannot be written. The kernel copies segment by
/// segment; the one holding byte `at` fails to copy (EFAULT), and the peek
/// returns the bytes of the segments before it (EFAULT itself when there are
/// none: it begins at 0). The fds of that segment are not peeked: its copy
/// failed before them. Raw libc: the iovec points at the guard page, which
/// no Rust slice may cover.
fn segment_start(from: &UnixStream, buf: &mut [u8], at: usize) -> io::Result<usize> {
    assert!(at < buf.len());
    let mut iov = [
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: at,
        },
        libc::iovec {
            iov_base: guard_page()?,
            iov_len: 1,
        },
    ];
    // SAFETY: an all-zero msghdr is valid (no name, no control buffer).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: the kernel writes at most `at` bytes into `buf`, which is that
    // long, and nothing into the guard page (it cannot).
    let r = unsafe { libc::recvmsg(from.as_raw_fd(), &mut msg, libc::MSG_PEEK) };
    match usize::try_from(r) {
        Ok(k) if k <= at => Ok(k),
        Ok(_) => Err(io::Error::other("a peek wrote to the guard page")),
        Err(_) => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EFAULT) => Ok(0),
            e => Err(e),
        },
    }
}

/// A page of this process that cannot be read or written, mapped once and
/// kept.
fn guard_page() -> io::Result<*mut libc::c_void> {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
    use std::num::NonZeroUsize;
    use std::sync::OnceLock;
    static GUARD: OnceLock<usize> = OnceLock::new();
    if let Some(&p) = GUARD.get() {
        return Ok(p as *mut libc::c_void);
    }
    // SAFETY: a new private mapping, at an address the kernel picks, that
    // aliases nothing (one byte asked: the kernel maps a whole page).
    let p = unsafe {
        mmap_anonymous(
            None,
            NonZeroUsize::MIN,
            ProtFlags::PROT_NONE,
            MapFlags::MAP_PRIVATE,
        )
    }
    .map_err(io::Error::from)?;
    // Two pumps may map one each at once: the other's is kept unused.
    Ok(*GUARD.get_or_init(|| p.as_ptr() as usize) as *mut libc::c_void)
}

/// Takes exactly `buf.len()` bytes (already seen by a peek), and the fds that
/// come with them. A read of exactly these bytes touches no later segment.
fn take(from: &UnixStream, buf: &mut [u8]) -> io::Result<Vec<OwnedFd>> {
    let (mut off, mut fds) = (0, Vec::new());
    while off < buf.len() {
        match recv_with(from, &mut buf[off..], MsgFlags::empty()) {
            Ok((0, _)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok((k, f)) => {
                off += k;
                fds.extend(f);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(fds)
}

/// Sends `data`, with `fds` (if any) on the segment that starts at byte
/// `fds_at`: the bytes before it plainly, then the rest in one sendmsg, which
/// puts the fds on its first segment.
fn send_all(to: &UnixStream, data: &[u8], fds: &[RawFd], fds_at: usize) -> io::Result<()> {
    let mut w = to;
    if fds.is_empty() {
        return w.write_all(data);
    }
    let (plain, seg) = data.split_at(fds_at);
    w.write_all(plain)?;
    let sent = loop {
        match to.send_with_fd(seg, fds) {
            Ok(k) => break k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    w.write_all(&seg[sent..])
}

fn count(t: &Traffic, chan: Chan, dir: Dir, n: usize, fds: usize) {
    let n = n as u64;
    match (chan, dir) {
        (Chan::Cpr, _) => {
            t.cpr_bytes.fetch_add(n, Ordering::Relaxed);
            t.cpr_fds.fetch_add(fds as u64, Ordering::Relaxed);
        }
        (Chan::Main, Dir::ToTarget) => {
            t.main_bytes_to_target.fetch_add(n, Ordering::Relaxed);
        }
        (Chan::Main, Dir::ToSource) => {
            t.main_bytes_to_source.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The errno's symbolic name (stable across runs, unlike messages with paths).
pub fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{:?}", nix::errno::Errno::from_raw(code)),
        None => format!("{:?}", e.kind()),
    }
}

/// The front and back paths of a trial's two channels, under `dir`.
pub fn routes(dir: &Path, target_cpr: &Path, target_main: &Path) -> Vec<Route> {
    vec![
        Route {
            chan: Chan::Cpr,
            front: dir.join("cpr.sock"),
            back: target_cpr.to_path_buf(),
        },
        Route {
            chan: Chan::Main,
            front: dir.join("main.sock"),
            back: target_main.to_path_buf(),
        },
    ]
}

#[cfg(test)]
mod tests;
