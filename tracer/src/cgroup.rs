//! cgroup v2: where its file system is mounted (found, never assumed), which directory a
//! cgroup id names, and what that directory's path says about the process in it: its systemd
//! unit, its container, its Kubernetes pod.
//!
//! `bpf_get_current_cgroup_id()` is the inode number of the task's cgroup v2 directory. The
//! file system is found in /proc/self/mountinfo (the first `cgroup2` mount): at
//! `/sys/fs/cgroup` on a pure v2 host, at `/sys/fs/cgroup/unified` on a hybrid one (v1
//! controllers on a tmpfs at /sys/fs/cgroup, as on older Ubuntu, RHEL 8, Amazon Linux 2), or
//! wherever it was mounted. Paths are cgroup paths, as the `0::` line of /proc/PID/cgroup
//! shows them (`/system.slice/nginx.service`), not file names.
//!
//! Ids become paths through [`Names`], one cache shared by the pipeline and the sinks. The
//! pipeline *resolves* the ids of what comes in (an event, an owner from /proc) before it is
//! recorded. A miss first reads the event's task's /proc/PID/cgroup (its `0::` path, taken
//! if that directory's inode is the id), else rescans the cgroup2 tree (at most once a
//! second; in between the id waits and is retried after the next batch). Every id learned
//! is journaled into a recording, so a replay on another machine learns the same ids at the
//! same points. The sinks and the filters only
//! *look up*, never scan: what a record shows depends only on what was resolved before it,
//! live and in a replay alike.
//!
//! The parsing here is pure (text in, values out) and unit-tested; the I/O is in
//! [`mount`], [`scan_tree`] and [`proc_cgroup`].
use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    os::unix::ffi::OsStringExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

/// The cgroup2 file system as mounted on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted: `/sys/fs/cgroup`, `/sys/fs/cgroup/unified`.
    pub point: PathBuf,
    /// The cgroup shown at the mount point (mountinfo's `root` field): `/`, unless a subtree
    /// was bind-mounted (a container that sees its own cgroup as the root).
    pub root: String,
}

/// The first `cgroup2` mount in a mountinfo text (`/proc/self/mountinfo`, see proc(5)):
/// `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`, with
/// spaces, tabs, newlines and backslashes in ROOT and POINT written as octal escapes
/// (`\040`).
pub fn parse_mountinfo(text: &str) -> Option<Mount> {
    text.lines().find_map(|line| {
        // The optional fields end at a lone `-`; no field holds a raw space.
        let (fields, fs) = line.split_once(" - ")?;
        if fs.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut f = fields.split(' ');
        let root = f.nth(3)?;
        let point = f.next()?;
        Some(Mount {
            point: PathBuf::from(OsString::from_vec(unescape(point))),
            root: String::from_utf8_lossy(&unescape(root)).into_owned(),
        })
    })
}

/// A mountinfo field with its octal escapes (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash) undone; a backslash not followed by three octal digits stays.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// This host's cgroup2 mount, read once from /proc/self/mountinfo; `None` when cgroup2 is not
/// mounted (owners' cgroup fields are then null, and `--cgroup` says why it cannot work).
pub fn mount() -> Option<&'static Mount> {
    static MOUNT: OnceLock<Option<Mount>> = OnceLock::new();
    MOUNT
        .get_or_init(|| {
            std::fs::read_to_string("/proc/self/mountinfo")
                .ok()
                .and_then(|t| parse_mountinfo(&t))
        })
        .as_ref()
}

/// What `--cgroup` and the owner fields say when no cgroup2 is mounted.
pub const NOT_MOUNTED: &str =
    "no cgroup2 file system is mounted on this host (none in /proc/self/mountinfo)";

impl Mount {
    /// The cgroup path of the directory `rel` below the mount point (`/a/b`, or empty for
    /// the mount point itself).
    pub fn cgroup_path(&self, rel: &str) -> String {
        match (self.root.trim_end_matches('/'), rel) {
            ("", "") => "/".into(),
            (root, "") => root.into(),
            (root, rel) => format!("{root}{rel}"),
        }
    }

    /// The directory of a cgroup path (`/system.slice/x.service`); `None` when this mount
    /// does not show it (outside a bind-mounted subtree, or a `..` from another cgroup
    /// namespace).
    pub fn dir(&self, cgroup: &str) -> Option<PathBuf> {
        if cgroup.split('/').any(|c| c == "..") {
            return None;
        }
        let root = self.root.trim_end_matches('/');
        let rel = cgroup.strip_prefix(root)?;
        if !(rel.is_empty() || rel.starts_with('/') || root.is_empty()) {
            return None; // `/kubepods-x` is not under `/kubepods`
        }
        let rel = rel.trim_matches('/');
        Some(if rel.is_empty() {
            self.point.clone()
        } else {
            self.point.join(rel)
        })
    }
}

/// The cgroup v2 path in a /proc/PID/cgroup text: its `0::` line.
pub fn v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| p.starts_with('/'))
}

/// A process's cgroup v2 id (the inode of its directory under `mount`) and path, from
/// /proc/PID/cgroup; `None` if it is gone or its cgroup is not under the mount.
pub fn proc_cgroup(pid: u32, mount: &Mount) -> Option<(u64, String)> {
    use std::os::unix::fs::MetadataExt as _;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = v2_path(&text)?;
    let meta = std::fs::metadata(mount.dir(path)?).ok()?;
    Some((meta.ino(), path.to_string()))
}

/// Most directories one scan of the cgroup2 tree visits: it bounds the time and memory
/// (about 100 bytes a directory) a rescan can cost on a host with many cgroups.
pub const MAX_SCAN_DIRS: usize = 100_000;
/// Deepest directory a scan descends to (systemd nests a dozen levels at most).
pub const MAX_SCAN_DEPTH: usize = 64;

/// The cgroup2 tree now: directory inode (the cgroup id) → cgroup path. At most
/// [`MAX_SCAN_DIRS`] directories, [`MAX_SCAN_DEPTH`] deep; names that are not UTF-8 are
/// skipped.
pub fn scan_tree(mount: &Mount) -> HashMap<u64, String> {
    use std::os::unix::fs::{DirEntryExt as _, MetadataExt as _};
    let mut out = HashMap::new();
    let Ok(meta) = std::fs::metadata(&mount.point) else {
        return out;
    };
    out.insert(meta.ino(), mount.cgroup_path(""));
    let mut stack = vec![(mount.point.clone(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // removed meanwhile
        };
        for e in entries.flatten() {
            if out.len() >= MAX_SCAN_DIRS {
                return out;
            }
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let rel = format!("{rel}/{name}");
            // kernfs gives a directory's inode in readdir: no stat per directory.
            out.insert(e.ino(), mount.cgroup_path(&rel));
            if depth + 1 < MAX_SCAN_DEPTH {
                stack.push((e.path(), rel, depth + 1));
            }
        }
    }
    out
}

/// Whether `path` is a directory of a cgroup2 file system (statfs magic).
pub fn is_cgroup2_dir(path: &Path) -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data (all zeroes is a valid value); the path is
    // NUL-terminated and the buffer is of the type statfs(2) fills.
    let (rc, st) = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut st), st)
    };
    // `f_type`'s type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    rc == 0 && magic == CGROUP2_SUPER_MAGIC && path.is_dir()
}

/// What a cgroup path says about the processes in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cgroup path: `/system.slice/nginx.service`.
    pub path: String,
    /// The innermost systemd unit ([`unit`]).
    pub unit: Option<String>,
    /// The container's full id ([`container_id`]).
    pub container_id: Option<String>,
    /// The Kubernetes pod's UID ([`pod_uid`]).
    pub pod_uid: Option<String>,
    /// The text sinks' short form ([`Identity::tag`]), made once.
    pub tag: Option<String>,
}

impl Identity {
    pub fn of(path: &str) -> Self {
        let unit = unit(path).map(str::to_string);
        let container_id = container_id(path).map(str::to_string);
        let pod_uid = pod_uid(path);
        let tag = tag(unit.as_deref(), container_id.as_deref(), pod_uid.as_deref());
        Self {
            path: path.to_string(),
            unit,
            container_id,
            pod_uid,
            tag,
        }
    }
}

/// The short form the text output puts after an owner, in brackets: `ctr 3f2a9c1b7d0e pod
/// 1a2b3c4d` (12 characters of the container id, 8 of the pod UID) for a container, else
/// the unit (`nginx.service`); `None` when the path names neither (the root, a slice, a
/// cgroup of one's own), so such hosts' text output is as it always was. A container's unit
/// is its scope (`docker-<id>.scope`): the id says more, in fewer characters.
fn tag(unit: Option<&str>, container: Option<&str>, pod: Option<&str>) -> Option<String> {
    let short = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    match (container, pod) {
        (Some(c), Some(p)) => Some(format!("ctr {} pod {}", short(c, 12), short(p, 8))),
        (Some(c), None) => Some(format!("ctr {}", short(c, 12))),
        (None, Some(p)) => Some(format!("pod {}", short(p, 8))),
        (None, None) => unit.map(str::to_string),
    }
}

/// The innermost systemd unit a cgroup path names: its last component ending in
/// `.service`, `.scope` or `.socket` (`/system.slice/nginx.service` → `nginx.service`,
/// `/user.slice/user-1000.slice/session-2.scope` → `session-2.scope`; a delegated
/// sub-cgroup below a unit belongs to it). For a container started by a systemd-driven
/// runtime this is its scope, `docker-<id>.scope`: the unit systemd knows it by.
pub fn unit(path: &str) -> Option<&str> {
    path.rsplit('/').find(|c| {
        [".service", ".scope", ".socket"]
            .iter()
            .any(|s| c.len() > s.len() && c.ends_with(s))
    })
}

/// Container runtimes' cgroup name prefixes: `docker-<id>.scope` (Docker, systemd driver),
/// `cri-containerd-<id>.scope` (containerd's CRI), `crio-<id>.scope` (CRI-O),
/// `libpod-<id>.scope` (Podman; `libpod-<id>` under /libpod_parent with cgroupfs).
const RUNTIMES: [&str; 4] = ["docker", "cri-containerd", "crio", "libpod"];

/// Lower-case hex, as container ids are written.
fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A container id in one path component, if it is a container's cgroup.
fn container_in(c: &str) -> Option<&str> {
    // cgroupfs drivers: the bare 64-hex id (`/docker/<id>`, `/kubepods/burstable/pod<uid>/<id>`).
    if c.len() == 64 && is_hex(c) {
        return Some(c);
    }
    let name = c.strip_suffix(".scope").unwrap_or(c);
    // systemd drivers: `<runtime>-<id>.scope` (and Podman's cgroupfs `libpod-<id>`). The
    // runtimes' monitors (`libpod-conmon-<id>.scope`, `crio-conmon-<id>.scope`) are not
    // containers, and their names are not hex after the prefix.
    for r in RUNTIMES {
        if let Some(id) = name.strip_prefix(r).and_then(|n| n.strip_prefix('-'))
            && id.len() >= 12
            && is_hex(id)
        {
            return Some(id);
        }
    }
    // containerd's and CRI-O's "systemd cgroup" notation, written as a path:
    // `kubepods-pod<uid>.slice:cri-containerd:<id>`.
    let mut parts = c.split(':');
    if let (Some(_), Some(r), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
        && RUNTIMES.contains(&r)
        && id.len() >= 12
        && is_hex(id)
    {
        return Some(id);
    }
    None
}

/// The full id of the container a cgroup path belongs to: the innermost component that is a
/// container's cgroup (`/system.slice/docker-<64hex>.scope`,
/// `/kubepods.slice/…/cri-containerd-<hex>.scope`, `crio-<hex>.scope`, `libpod-<hex>.scope`
/// and Podman's `libpod-<hex>.scope/container`, `/docker/<64hex>`,
/// `/kubepods/burstable/pod<uid>/<64hex>`, `/libpod_parent/libpod-<hex>`).
pub fn container_id(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(container_in)
}

/// A pod UID as Kubernetes writes it: hex digits and dashes (a UUID, or a static pod's
/// 32-hex hash).
fn is_uid(s: &str) -> bool {
    s.len() >= 8
        && s.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The UID of the Kubernetes pod a cgroup path belongs to: from the systemd driver's
/// `kubepods-burstable-pod<UID with _ for ->.slice` (`kubepods-pod<uid>.slice` for a
/// guaranteed pod), with the underscores turned back into dashes, or from the cgroupfs
/// driver's `pod<uid>` component below a `kubepods` one.
pub fn pod_uid(path: &str) -> Option<String> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in comps.iter().enumerate().rev() {
        if let Some(slice) = c.strip_suffix(".slice")
            && slice.starts_with("kubepods")
            && let Some((_, uid)) = slice.rsplit_once("-pod")
        {
            let uid = uid.replace('_', "-");
            if is_uid(&uid) {
                return Some(uid);
            }
        }
        if let Some(uid) = c.strip_prefix("pod")
            && is_uid(uid)
            && comps[..i].iter().any(|p| p.starts_with("kubepods"))
        {
            return Some(uid.to_string());
        }
    }
    None
}

/// Most ids [`Names`] keeps; when full it starts again (every id learned is journaled, so a
/// replay starts again at the same point).
pub const MAX_KNOWN: usize = 16_384;
/// Most ids waiting for the next rescan.
pub const MAX_PENDING: usize = 4_096;
/// Shortest time between two rescans of the cgroup2 tree; longer if a scan is slow (at most
/// 2 % of the time is spent scanning).
pub const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// Where a live cache learns ids: the cgroup2 tree, and a process's /proc/PID/cgroup.
pub trait Lookup: Send {
    /// The whole tree now: id → cgroup path ([`scan_tree`]).
    fn tree(&mut self) -> HashMap<u64, String>;
    /// A process's cgroup id and path ([`proc_cgroup`]).
    fn of_pid(&mut self, pid: u32) -> Option<(u64, String)>;
}

/// This host's cgroup2 mount.
struct Host(&'static Mount);

impl Lookup for Host {
    fn tree(&mut self) -> HashMap<u64, String> {
        scan_tree(self.0)
    }
    fn of_pid(&mut self, pid: u32) -> Option<(u64, String)> {
        proc_cgroup(pid, self.0)
    }
}

/// The state behind [`Names`].
#[derive(Default)]
struct Cache {
    /// What lookups answer: resolved ids, with `None` for an id the tree did not hold when
    /// it was scanned after the id was seen (its cgroup is gone).
    known: HashMap<u64, Option<Arc<Identity>>>,
    /// The tree as last scanned.
    tree: HashMap<u64, String>,
    /// Live: where to look. A replay never looks: it learns from the recording.
    scanner: Option<Box<dyn Lookup>>,
    last_scan: Option<Instant>,
    last_cost: Duration,
    /// Ids missed while a rescan was not due: resolved at the next one.
    pending: HashSet<u64>,
    /// Recording: every id learned, in order, until taken.
    journal: Option<Vec<(u64, Option<String>)>>,
    scans: u64,
}

impl Cache {
    fn publish(&mut self, id: u64, path: Option<String>) {
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&id) {
            self.known.clear();
        }
        if let Some(j) = &mut self.journal {
            j.push((id, path.clone()));
        }
        self.known
            .insert(id, path.map(|p| Arc::new(Identity::of(&p))));
    }

    fn rescan_due(&self, now: Instant) -> bool {
        let wait = RESCAN_EVERY.max(self.last_cost * 50);
        self.scanner.is_some()
            && self
                .last_scan
                .is_none_or(|t| now.saturating_duration_since(t) >= wait)
    }

    /// Rescans, then settles every pending id (found, or gone).
    fn rescan(&mut self, now: Instant) {
        let Some(scan) = &mut self.scanner else {
            return;
        };
        let started = Instant::now();
        self.tree = scan.tree();
        self.last_cost = started.elapsed();
        self.last_scan = Some(now);
        self.scans += 1;
        let mut pending: Vec<u64> = self.pending.drain().collect();
        pending.sort_unstable(); // the journal's order must not depend on hashing
        for id in pending {
            if !self.known.contains_key(&id) {
                let path = self.tree.get(&id).cloned();
                self.publish(id, path);
            }
        }
    }

    /// `pid`: a process seen in cgroup `id` (the event's task), if any: its /proc/PID/cgroup
    /// is read on a miss, before a rescan (one file and one stat, not the whole tree).
    fn resolve(&mut self, id: u64, pid: Option<u32>, now: Instant) -> Option<Arc<Identity>> {
        if id == 0 {
            return None;
        }
        if let Some(v) = self.known.get(&id) {
            return v.clone();
        }
        let scanner = self.scanner.as_mut()?;
        // The process may have moved since: only its cgroup of that id counts.
        let by_pid = pid
            .and_then(|p| scanner.of_pid(p))
            .filter(|(i, _)| *i == id)
            .map(|(_, p)| p);
        if let Some(p) = self.tree.get(&id).cloned().or(by_pid) {
            self.pending.remove(&id);
            self.publish(id, Some(p));
        } else if self.rescan_due(now) {
            self.pending.insert(id);
            self.rescan(now);
        } else {
            if self.pending.len() < MAX_PENDING {
                self.pending.insert(id);
            }
            return None;
        }
        self.known.get(&id).cloned().flatten()
    }
}

/// Cgroup id → path and identity: one cache, shared (cheap clones of one handle) by the
/// pipeline, which resolves, and the sinks and filters, which look up. See the module
/// documentation for why only the pipeline resolves.
#[derive(Clone, Default)]
pub struct Names(Arc<Mutex<Cache>>);

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.lock();
        f.debug_struct("Names")
            .field("known", &c.known.len())
            .field("scanning", &c.scanner.is_some())
            .finish()
    }
}

impl Names {
    /// A cache that only knows what it is told ([`Self::learn`], [`Self::note`]): a replay's,
    /// a test's, a host without cgroup2.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Live: resolve misses from this host's cgroup2 tree at `mount` and /proc.
    pub fn scan(&self, mount: &'static Mount) {
        self.scan_with(Host(mount));
    }

    /// Resolve misses with `lookup`.
    pub fn scan_with(&self, lookup: impl Lookup + 'static) {
        self.lock().scanner = Some(Box::new(lookup));
    }

    /// Recording: keep every id learned from now on for [`Self::take_journal`].
    pub fn start_journal(&self) {
        self.lock().journal.get_or_insert_with(Vec::new);
    }

    /// The ids learned since the last call, in order (`None`: the id's cgroup was gone).
    pub fn take_journal(&self) -> Vec<(u64, Option<String>)> {
        self.lock()
            .journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The identity of cgroup `id`, learning it if needed: on a miss, process `pid`'s
    /// /proc/PID/cgroup is read (if given: a task seen in that cgroup), else the tree is
    /// rescanned when a rescan is due, else the id waits for the next one ([`Self::retry`])
    /// and is `None` until then.
    pub fn resolve(&self, id: u64, pid: Option<u32>) -> Option<Arc<Identity>> {
        self.lock().resolve(id, pid, Instant::now())
    }

    /// Resolves the ids missed earlier, if a rescan is due (after each batch).
    pub fn retry(&self) {
        self.retry_at(Instant::now());
    }

    fn retry_at(&self, now: Instant) {
        let mut c = self.lock();
        if !c.pending.is_empty() && c.rescan_due(now) {
            c.rescan(now);
        }
    }

    /// What is known of cgroup `id`, without learning anything.
    pub fn get(&self, id: u64) -> Option<Arc<Identity>> {
        if id == 0 {
            return None;
        }
        self.lock().known.get(&id).cloned().flatten()
    }

    /// A recorded id (a replay): learned as the recording says.
    pub fn learn(&self, id: u64, path: Option<String>) {
        self.lock().publish(id, path);
    }

    /// An id and path seen elsewhere (a process's /proc/PID/cgroup): learned unless known
    /// so already.
    pub fn note(&self, id: u64, path: &str) {
        let mut c = self.lock();
        if id == 0
            || c.known
                .get(&id)
                .is_some_and(|v| v.as_ref().is_some_and(|i| i.path == path))
        {
            return;
        }
        c.pending.remove(&id);
        c.publish(id, Some(path.to_string()));
    }

    /// How many times the tree was scanned.
    pub fn scans(&self) -> u64 {
        self.lock().scans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "3f2a9c1b7d0e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";

    #[test]
    fn mountinfo_pure_v2_hybrid_and_none() {
        let pure = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        assert_eq!(
            parse_mountinfo(pure),
            Some(Mount {
                point: "/sys/fs/cgroup".into(),
                root: "/".into()
            })
        );
        // Hybrid: v1 controllers on a tmpfs at /sys/fs/cgroup, cgroup2 beside them.
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
34 31 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";
        let m = parse_mountinfo(hybrid).unwrap();
        assert_eq!(m.point, Path::new("/sys/fs/cgroup/unified"));
        // This machine's shape: no optional fields at all.
        let bare = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(bare).unwrap().point,
            Path::new("/sys/fs/cgroup/unified")
        );
        let none = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
";
        assert_eq!(parse_mountinfo(none), None);
        assert_eq!(parse_mountinfo(""), None);
        // The first of two; escapes undone; a bind-mounted subtree keeps its root.
        let two = "\
50 1 0:40 /kubepods/pod1 /mnt/my\\040cgroups rw - cgroup2 none rw
51 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            parse_mountinfo(two),
            Some(Mount {
                point: "/mnt/my cgroups".into(),
                root: "/kubepods/pod1".into()
            })
        );
        // A mount point named like the separator, escaped as the kernel writes it.
        let tricky = "60 1 0:40 / /a\\040-\\040b rw shared:1 - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_mountinfo(tricky).unwrap().point, Path::new("/a - b"));
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(r"/a\040b\011c\012d\134e"), b"/a b\tc\nd\\e");
        assert_eq!(unescape(r"/a\04"), b"/a\\04", "too short: kept");
        assert_eq!(unescape(r"\9999"), b"\\9999", "not octal: kept");
        assert_eq!(unescape(r"\377"), [0xff]);
    }

    #[test]
    fn paths_and_directories() {
        let m = Mount {
            point: "/sys/fs/cgroup/unified".into(),
            root: "/".into(),
        };
        assert_eq!(m.cgroup_path(""), "/");
        assert_eq!(m.cgroup_path("/system.slice"), "/system.slice");
        assert_eq!(
            m.dir("/system.slice/x.service"),
            Some("/sys/fs/cgroup/unified/system.slice/x.service".into())
        );
        assert_eq!(m.dir("/"), Some("/sys/fs/cgroup/unified".into()));
        assert_eq!(m.dir("/../../x"), None, "another namespace's cgroup");
        let sub = Mount {
            point: "/sys/fs/cgroup".into(),
            root: "/kubepods/pod1/".into(),
        };
        assert_eq!(sub.cgroup_path(""), "/kubepods/pod1");
        assert_eq!(sub.cgroup_path("/ctr"), "/kubepods/pod1/ctr");
        assert_eq!(
            sub.dir("/kubepods/pod1/ctr"),
            Some("/sys/fs/cgroup/ctr".into())
        );
        assert_eq!(sub.dir("/kubepods/pod1"), Some("/sys/fs/cgroup".into()));
        assert_eq!(sub.dir("/kubepods/pod10"), None);
        assert_eq!(sub.dir("/system.slice"), None);
    }

    #[test]
    fn proc_cgroup_lines() {
        assert_eq!(
            v2_path("0::/system.slice/a.service\n"),
            Some("/system.slice/a.service")
        );
        let hybrid = "9:name=systemd:/user.slice\n4:memory:/x\n0::/user.slice/session-1.scope\n";
        assert_eq!(v2_path(hybrid), Some("/user.slice/session-1.scope"));
        assert_eq!(v2_path("4:memory:/x\n"), None, "v1 only");
        assert_eq!(v2_path("0::\n"), None);
    }

    #[test]
    fn units() {
        assert_eq!(unit("/system.slice/nginx.service"), Some("nginx.service"));
        assert_eq!(
            unit("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope"),
            Some("app-foo.scope")
        );
        assert_eq!(
            unit("/user.slice/user-1000.slice/user@1000.service/init.scope"),
            Some("init.scope")
        );
        assert_eq!(unit("/system.slice/sshd.socket"), Some("sshd.socket"));
        assert_eq!(
            unit("/system.slice/foo.service/worker"),
            Some("foo.service"),
            "a delegated sub-cgroup belongs to its unit"
        );
        assert_eq!(unit("/"), None);
        assert_eq!(unit("/user.slice"), None);
        assert_eq!(unit("/docker/abc"), None);
        assert_eq!(unit("/x/.service"), None, "a bare suffix is no unit");
    }

    #[test]
    fn container_ids() {
        let h = HEX64;
        for (path, want) in [
            (format!("/system.slice/docker-{h}.scope"), Some(h)),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_90ab_cdef_1234567890ab.slice/cri-containerd-{h}.scope"
                ),
                Some(h),
            ),
            (format!("/machine.slice/crio-{h}.scope"), Some(h)),
            (format!("/machine.slice/libpod-{h}.scope"), Some(h)),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{h}.scope/container"
                ),
                Some(h),
            ),
            (format!("/docker/{h}"), Some(h)),
            (format!("/kubepods/burstable/pod1234abcd-5678/{h}"), Some(h)),
            (format!("/libpod_parent/libpod-{h}"), Some(h)),
            (
                format!(
                    "/system.slice/containerd.service/kubepods-pod12345678.slice:cri-containerd:{h}"
                ),
                Some(h),
            ),
            (format!("/docker/{}/docker/{h}", "a".repeat(64)), Some(h)),
            (format!("/machine.slice/libpod-conmon-{h}.scope"), None),
            (format!("/machine.slice/crio-conmon-{h}.scope"), None),
            ("/system.slice/docker.service".to_string(), None),
            ("/system.slice/docker-abc.scope".to_string(), None),
            (format!("/docker/{}", &h[..63]), None),
            (format!("/docker/{}", h.to_uppercase()), None),
            ("/".to_string(), None),
        ] {
            assert_eq!(container_id(&path), want, "{path}");
        }
        // Shorter ids after a runtime prefix are accepted (12 or more hex digits).
        assert_eq!(
            container_id("/x/crio-0123456789ab.scope"),
            Some("0123456789ab")
        );
    }

    #[test]
    fn pod_uids() {
        let h = HEX64;
        for (path, want) in [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_90ab_cdef_1234567890ab.slice/cri-containerd-{h}.scope"
                ),
                Some("1234abcd-5678-90ab-cdef-1234567890ab"),
            ),
            (
                "/kubepods.slice/kubepods-pod0a1b2c3d_0000_1111_2222_333344445555.slice"
                    .to_string(),
                Some("0a1b2c3d-0000-1111-2222-333344445555"),
            ),
            (
                format!("/kubepods/besteffort/pod0a1b2c3d-0000-1111-2222-333344445555/{h}"),
                Some("0a1b2c3d-0000-1111-2222-333344445555"),
            ),
            (
                format!("/kubepods/pod0123456789abcdef0123456789abcdef/{h}"),
                Some("0123456789abcdef0123456789abcdef"),
            ),
            ("/system.slice/podman.service".to_string(), None),
            ("/home/pod0a1b2c3d-0000".to_string(), None),
            ("/kubepods.slice/kubepods-burstable.slice".to_string(), None),
            ("/kubepods/podcast".to_string(), None),
        ] {
            assert_eq!(pod_uid(&path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn identities_and_their_text() {
        let i = Identity::of("/system.slice/nginx.service");
        assert_eq!(
            (
                i.unit.as_deref(),
                i.container_id.as_deref(),
                i.pod_uid.as_deref(),
                i.tag.as_deref()
            ),
            (Some("nginx.service"), None, None, Some("nginx.service"))
        );
        let k = Identity::of(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b3c4d_0000_1111_2222_333344445555.slice/cri-containerd-{HEX64}.scope"
        ));
        assert_eq!(
            k.unit.as_deref(),
            Some(&*format!("cri-containerd-{HEX64}.scope"))
        );
        assert_eq!(k.tag.as_deref(), Some("ctr 3f2a9c1b7d0e pod 1a2b3c4d"));
        let d = Identity::of(&format!("/docker/{HEX64}"));
        assert_eq!(d.tag.as_deref(), Some("ctr 3f2a9c1b7d0e"));
        assert_eq!(Identity::of("/").tag, None);
        assert_eq!(Identity::of("/user.slice").tag, None);
    }

    fn tree(entries: &[(u64, &str)]) -> HashMap<u64, String> {
        entries.iter().map(|&(i, p)| (i, p.to_string())).collect()
    }

    /// A fake host: its tree, and its processes' cgroups.
    #[derive(Clone, Default)]
    struct Fake {
        tree: Arc<Mutex<HashMap<u64, String>>>,
        procs: Arc<Mutex<HashMap<u32, (u64, String)>>>,
    }

    impl Lookup for Fake {
        fn tree(&mut self) -> HashMap<u64, String> {
            self.tree.lock().unwrap().clone()
        }
        fn of_pid(&mut self, pid: u32) -> Option<(u64, String)> {
            self.procs.lock().unwrap().get(&pid).cloned()
        }
    }

    #[test]
    fn misses_rescan_at_most_once_a_second_and_are_retried() {
        let fake = Fake::default();
        *fake.tree.lock().unwrap() = tree(&[(1, "/"), (10, "/a.service")]);
        let shared = fake.tree.clone();
        let names = Names::new();
        names.scan_with(fake);
        names.start_journal();
        let t0 = Instant::now();
        let mut c = names.lock();
        assert_eq!(c.resolve(10, None, t0).unwrap().path, "/a.service");
        assert_eq!(c.scans, 1);
        // Known from the last scan: no rescan.
        assert_eq!(c.resolve(1, None, t0).unwrap().path, "/");
        // A new cgroup before the next rescan is due: missed, pending.
        shared.lock().unwrap().insert(20, "/b.scope".into());
        assert_eq!(c.resolve(20, None, t0 + Duration::from_millis(10)), None);
        assert_eq!(c.scans, 1);
        assert!(c.pending.contains(&20));
        drop(c);
        assert_eq!(names.get(20), None, "a lookup never scans");
        names.retry_at(t0 + Duration::from_millis(500));
        assert_eq!(names.scans(), 1, "not due yet");
        names.retry_at(t0 + Duration::from_millis(1000));
        assert_eq!(names.scans(), 2);
        assert_eq!(names.get(20).unwrap().unit.as_deref(), Some("b.scope"));
        // Gone by the time of a due scan: known as gone, not scanned for again.
        let mut c = names.lock();
        assert_eq!(c.resolve(30, None, t0 + Duration::from_secs(3)), None);
        assert_eq!(c.scans, 3);
        assert_eq!(c.resolve(30, None, t0 + Duration::from_secs(5)), None);
        assert_eq!(c.scans, 3);
        drop(c);
        assert_eq!(
            names.take_journal(),
            [
                (10, Some("/a.service".to_string())),
                (1, Some("/".to_string())),
                (20, Some("/b.scope".to_string())),
                (30, None)
            ]
        );
        assert!(names.take_journal().is_empty());
        assert_eq!(names.resolve(0, None), None, "0: not known");
    }

    #[test]
    fn a_miss_reads_the_tasks_proc_cgroup_before_waiting_for_a_rescan() {
        let fake = Fake::default();
        let procs = fake.procs.clone();
        let names = Names::new();
        names.scan_with(fake);
        let t0 = Instant::now();
        let mut c = names.lock();
        assert_eq!(c.resolve(1, None, t0), None);
        assert_eq!(c.scans, 1);
        // A new container's first task, before a rescan is due: found through its pid.
        let ctr = format!("/system.slice/docker-{HEX64}.scope");
        procs.lock().unwrap().insert(77, (40, ctr.clone()));
        let soon = t0 + Duration::from_millis(5);
        let i = c.resolve(40, Some(77), soon).unwrap();
        assert_eq!(
            (i.path.as_str(), i.container_id.as_deref()),
            (&*ctr, Some(HEX64))
        );
        assert_eq!(c.scans, 1);
        // A task that moved on (another id now): not taken for this one.
        procs
            .lock()
            .unwrap()
            .insert(78, (41, "/elsewhere.service".into()));
        assert_eq!(c.resolve(42, Some(78), soon), None);
        assert!(c.pending.contains(&42) && !c.known.contains_key(&41));
    }

    #[test]
    fn a_replay_learns_and_never_scans() {
        let names = Names::new();
        assert_eq!(names.resolve(5, Some(1)), None);
        names.learn(5, Some("/system.slice/x.service".into()));
        assert_eq!(
            names.resolve(5, None).unwrap().unit.as_deref(),
            Some("x.service")
        );
        names.learn(5, None);
        assert_eq!(names.get(5), None);
        assert_eq!(names.scans(), 0);
    }

    #[test]
    fn a_note_seeds_once_and_the_cache_is_bounded() {
        let names = Names::new();
        names.start_journal();
        names.note(7, "/a.service");
        names.note(7, "/a.service");
        names.note(0, "/ignored");
        assert_eq!(names.take_journal(), [(7, Some("/a.service".to_string()))]);
        for i in 0..MAX_KNOWN as u64 + 10 {
            names.learn(100 + i, Some(format!("/c{i}")));
        }
        assert!(names.lock().known.len() <= MAX_KNOWN);
        assert!(names.get(100 + MAX_KNOWN as u64 + 9).is_some());
    }

    #[test]
    fn this_hosts_mount_if_any_is_a_cgroup2_directory() {
        // Whatever this host has: if cgroup2 is mounted, its root is a cgroup2 directory and
        // a scan of it finds the root.
        if let Some(m) = mount() {
            assert!(is_cgroup2_dir(&m.point), "{m:?}");
            let t = scan_tree(m);
            assert!(t.values().any(|p| p == &m.cgroup_path("")), "{m:?}");
            assert!(t.len() <= MAX_SCAN_DIRS);
        }
        assert!(!is_cgroup2_dir(Path::new("/proc")));
    }
}
