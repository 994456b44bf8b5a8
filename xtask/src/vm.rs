//! Booting Debian's own kernels under qemu with a small initramfs: the
//! harness behind `cargo xtask kernels`, and for any test that needs a
//! kernel (or a cgroup hierarchy) this host does not have.
//!
//! - [`fetch`]: a suite's newest cloud kernel, through apt with a
//!   sources.list of our own, extracted and cached under `target/kernels/`
//! - [`Initramfs`]: a newc cpio archive (files, directories, symlinks,
//!   a binary with its shared libraries, kernel modules with their deps)
//! - [`boot`]: qemu under TCG (this host's /dev/kvm is not usable), serial
//!   console on stdout, a timeout; [`between`] cuts marked output out.
//!
//! Typical use: `let k = vm::fetch(&vm::SUITES[0])?; let mut i =
//! Initramfs::with_busybox()?; i.modules(&k, &["null_blk"])?; i.file("/init",
//! script, 0o755); let out = vm::boot(&k, &i.write_to(path)?, &Boot::default())?`.
//! The init script mounts what it needs and ends with `poweroff -f`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::deps::{output, status};

/// A kernel of the matrix: a name and the Debian suites whose newest
/// `linux-image-cloud-amd64` it is.
#[derive(Clone, Copy, Debug)]
pub struct Suite {
    /// Our name for it (also its cache folder): `bookworm-backports`.
    pub name: &'static str,
    /// (archive, suite) pairs searched together; apt picks the newest.
    pub suites: &'static [(Archive, &'static str)],
}

/// Which of Debian's archives a suite lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archive {
    /// deb.debian.org/debian (or the mirror this host uses)
    Main,
    /// deb.debian.org/debian-security
    Security,
}

/// The kernels Vantage's fleet runs, as Debian ships them.
pub const SUITES: &[Suite] = &[
    Suite { name: "bullseye", suites: &[(Archive::Main, "bullseye")] },
    Suite { name: "bookworm", suites: &[(Archive::Main, "bookworm"), (Archive::Security, "bookworm-security")] },
    // Alone: with bookworm-security beside it apt would pick 6.1 (backports
    // are never a candidate over a release).
    Suite { name: "bookworm-backports", suites: &[(Archive::Main, "bookworm-backports")] },
    Suite { name: "trixie", suites: &[(Archive::Main, "trixie"), (Archive::Security, "trixie-security")] },
    Suite { name: "trixie-backports", suites: &[(Archive::Main, "trixie-backports")] },
];

/// A fetched and extracted kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The [`Suite`] name.
    pub name: String,
    /// The Debian package version (`6.1.140-1`).
    pub version: String,
    /// The kernel release, as `uname -r` says and /lib/modules names it.
    pub release: String,
    /// The bootable image.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the extracted packages.
    pub modules: PathBuf,
}

/// Where kernels and their apt state are cached: `<workspace>/target/kernels`.
pub fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("kernels")
}

/// The mirrors this host's apt uses for Debian's main and security
/// archives (deb822 `.sources` or one-line `.list` files), with
/// deb.debian.org where none is configured.
fn mirrors() -> (String, String) {
    let mut main = None;
    let mut security = None;
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.push("/etc/apt/sources.list".into());
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let name = file.to_string_lossy();
        // (uri, suites) pairs from either format.
        let mut entries: Vec<(String, Vec<String>)> = Vec::new();
        if name.ends_with(".sources") {
            for stanza in text.split("\n\n") {
                let field = |key: &str| {
                    stanza.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string())).unwrap_or_default()
                };
                let suites: Vec<String> = field("Suites:").split_whitespace().map(String::from).collect();
                for uri in field("URIs:").split_whitespace() {
                    entries.push((uri.to_string(), suites.clone()));
                }
            }
        } else if name.ends_with(".list") {
            for line in text.lines().map(str::trim).filter(|l| l.starts_with("deb ")) {
                // deb [options] uri suite components...
                let words: Vec<&str> = line.split_whitespace().skip(1).filter(|w| !w.starts_with('[')).collect();
                let words: Vec<&str> = words.into_iter().skip_while(|w| w.contains('=') || w.ends_with(']')).collect();
                if let [uri, suite, ..] = words[..] {
                    entries.push((uri.to_string(), vec![suite.to_string()]));
                }
            }
        }
        for (uri, suites) in entries {
            let uri = uri.trim_end_matches('/').to_string();
            if uri.ends_with("/debian-security") && security.is_none() {
                security = Some(uri);
            } else if uri.ends_with("/debian") && main.is_none() && suites.iter().any(|s| !s.contains('-')) {
                main = Some(uri);
            }
        }
    }
    (
        main.unwrap_or_else(|| "http://deb.debian.org/debian".into()),
        security.unwrap_or_else(|| "http://deb.debian.org/debian-security".into()),
    )
}

/// Fetches (or finds in the cache) the newest cloud kernel of `suite`.
/// The version comes from the suite's `linux-image-cloud-amd64`
/// metapackage, so an ABI bump needs no change here. When the archive
/// cannot be reached, the newest kernel cached for the suite is used (and
/// said so); with nothing cached the error names the suite.
pub fn fetch(suite: &Suite) -> anyhow::Result<Kernel> {
    let dir = cache_dir().join(suite.name);
    let resolved = resolve(suite, &dir);
    let (version, packages) = match resolved {
        Ok(found) => found,
        Err(e) => match cached(&dir) {
            Some(kernel) => {
                eprintln!("kernels: {}: {e:#}; using the cached {}", suite.name, kernel.version);
                return Ok(kernel);
            }
            None => return Err(e.context(format!("kernel {}: cannot fetch it and none is cached", suite.name))),
        },
    };
    let root = dir.join(format!("root-{version}"));
    if !root.join(".complete").exists() {
        let debs = dir.join("debs");
        let _ = std::fs::remove_dir_all(&debs);
        std::fs::create_dir_all(&debs)?;
        let mut cmd = apt(&dir, "apt-get");
        cmd.arg("download").args(&packages).current_dir(&debs).stdout(Stdio::null());
        status(&mut cmd).with_context(|| format!("kernel {}: downloading {}", suite.name, packages.join(" ")))?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        for deb in std::fs::read_dir(&debs)? {
            let deb = deb?.path();
            status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))
                .with_context(|| format!("kernel {}: extracting {}", suite.name, deb.display()))?;
        }
        let _ = std::fs::remove_dir_all(&debs);
        std::fs::write(root.join(".complete"), &version)?;
        // Older versions of this suite are no longer needed.
        for old in std::fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
            let name = old.file_name().to_string_lossy().into_owned();
            if name.starts_with("root-") && old.path() != root {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
    }
    kernel_at(suite.name, &root, &version)
}

/// An apt command reading only our own sources.list and state in `dir`.
fn apt(dir: &Path, program: &str) -> Command {
    let mut cmd = Command::new(program);
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    for o in [
        opt("Dir::Etc::sourcelist", &dir.join("sources.list")),
        "Dir::Etc::sourceparts=-".into(),
        opt("Dir::State::Lists", &dir.join("lists")),
        opt("Dir::Cache", &dir.join("cache")),
        // Downloads land in a folder only root may write to.
        "APT::Sandbox::User=root".into(),
    ] {
        cmd.arg("-o").arg(o);
    }
    cmd
}

/// The newest version of the suite's cloud kernel and the packages that
/// hold its image and modules.
fn resolve(suite: &Suite, dir: &Path) -> anyhow::Result<(String, Vec<String>)> {
    std::fs::create_dir_all(dir.join("lists/partial"))?;
    std::fs::create_dir_all(dir.join("cache/archives/partial"))?;
    let (main, security) = mirrors();
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let list: String = suite
        .suites
        .iter()
        .map(|(archive, s)| {
            let uri = if *archive == Archive::Main { &main } else { &security };
            format!("deb [signed-by={keyring}] {uri} {s} main\n")
        })
        .collect();
    std::fs::write(dir.join("sources.list"), list)?;
    let mut update = apt(dir, "apt-get");
    update.args(["update", "-qq"]).stdout(Stdio::null());
    status(&mut update).with_context(|| format!("apt-get update for {:?}", suite.suites))?;
    let show = |package: &str| -> anyhow::Result<String> {
        output(apt(dir, "apt-cache").args(["show", "--no-all-versions", package]))
            .with_context(|| format!("apt-cache show {package} in {:?}", suite.suites))
    };
    let depends = |record: &str| -> Vec<String> {
        let line = record.lines().find_map(|l| l.strip_prefix("Depends:")).unwrap_or_default();
        line.split(',')
            .flat_map(|alt| alt.split('|'))
            .filter_map(|d| d.split_whitespace().next())
            .map(String::from)
            .collect()
    };
    let meta = show("linux-image-cloud-amd64")?;
    let version = meta.lines().find_map(|l| l.strip_prefix("Version:")).context("no Version")?.trim().to_string();
    let image = depends(&meta)
        .into_iter()
        .find(|d| d.starts_with("linux-image-") && d != "linux-image-cloud-amd64")
        .with_context(|| format!("linux-image-cloud-amd64 {version} names no linux-image package"))?;
    // The image package holds vmlinuz and the modules, or (7.x) depends on
    // linux-binary-* and linux-modules-* of the same ABI that do.
    let abi = image.trim_start_matches("linux-image-").to_string();
    let mut packages = vec![image.clone()];
    for dep in depends(&show(&image)?) {
        if dep.ends_with(&abi) && (dep.starts_with("linux-binary-") || dep.starts_with("linux-modules-")) {
            packages.push(dep);
        }
    }
    Ok((version, packages))
}

/// The newest complete extraction in a suite's cache folder.
fn cached(dir: &Path) -> Option<Kernel> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(".complete").exists())
        .collect();
    roots.sort();
    let root = roots.pop()?;
    let version = std::fs::read_to_string(root.join(".complete")).ok()?;
    kernel_at(&dir.file_name()?.to_string_lossy(), &root, &version).ok()
}

fn kernel_at(name: &str, root: &Path, version: &str) -> anyhow::Result<Kernel> {
    // Debian's packages put modules under /lib or (newer) /usr/lib, and the
    // image in /boot or (7.x) next to the modules.
    let mut found = None;
    for dir in ["lib/modules", "usr/lib/modules"].iter().map(|d| root.join(d)) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().filter_map(|e| e.ok()) {
            let release = entry.file_name().to_string_lossy().into_owned();
            let beside = entry.path().join("vmlinuz");
            let boot = root.join("boot").join(format!("vmlinuz-{release}"));
            if let Some(vmlinuz) = [beside, boot].into_iter().find(|p| p.is_file()) {
                found = Some((release, vmlinuz, entry.path()));
            }
        }
    }
    let (release, vmlinuz, modules) =
        found.with_context(|| format!("kernel {name}: no vmlinuz and modules folder in {}", root.display()))?;
    Ok(Kernel { name: name.to_string(), version: version.to_string(), release, vmlinuz, modules })
}

/// One member of a newc archive.
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// An initramfs (newc cpio, uncompressed: every kernel unpacks that).
#[derive(Default)]
pub struct Initramfs {
    entries: std::collections::BTreeMap<String, Entry>,
}

impl Initramfs {
    /// An archive with busybox-static as /bin/busybox, /bin/sh and every
    /// applet the scripts here use, plus the folders the init mounts on.
    pub fn with_busybox() -> anyhow::Result<Self> {
        let mut i = Initramfs::default();
        for d in ["dev", "proc", "sys", "tmp", "run", "etc"] {
            i.dir(d);
        }
        i.copy("bin/busybox", Path::new("/bin/busybox"), 0o755)
            .context("busybox-static (apt-get install busybox-static)")?;
        let applets = output(Command::new("/bin/busybox").arg("--list")).context("busybox --list")?;
        for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            i.symlink(&format!("bin/{applet}"), "busybox");
        }
        Ok(i)
    }

    /// A directory (and its parents).
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_start_matches('/');
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            self.entries.entry(at.clone()).or_insert(Entry::Dir);
        }
    }

    fn parent(&mut self, path: &str) -> String {
        let path = path.trim_start_matches('/').to_string();
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        path
    }

    /// A file with these contents.
    pub fn file(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        let path = self.parent(path);
        self.entries.insert(path, Entry::File { data: data.into(), mode });
    }

    /// A copy of the host's file `from`.
    pub fn copy(&mut self, path: &str, from: &Path, mode: u32) -> anyhow::Result<()> {
        let data = std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
        self.file(path, data, mode);
        Ok(())
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = self.parent(path);
        self.entries.insert(path, Entry::Symlink(target.to_string()));
    }

    /// The host's binary `from` at `path`, with the shared libraries and
    /// loader `ldd` names at their host paths (a static binary has none).
    pub fn binary(&mut self, path: &str, from: &Path) -> anyhow::Result<()> {
        self.copy(path, from, 0o755)?;
        let ldd = Command::new("ldd").arg(from).output().with_context(|| format!("ldd {}", from.display()))?;
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)".
            let lib = line.split("=>").last().and_then(|r| r.split_whitespace().next()).unwrap_or_default();
            if lib.starts_with('/') {
                let real = std::fs::canonicalize(lib).with_context(|| format!("resolve {lib}"))?;
                self.copy(lib, &real, 0o755)?;
            }
        }
        Ok(())
    }

    /// The kernel modules `names` of `kernel` and every module they depend
    /// on (their own `depends=` entry: 7.x packages ship no modules.dep),
    /// decompressed, under /lib/modules/<release>; the returned guest
    /// paths load in this order with `insmod`.
    pub fn modules(&mut self, kernel: &Kernel, names: &[&str]) -> anyhow::Result<Vec<String>> {
        let mut files = BTreeMap::new();
        let mut stack = vec![kernel.modules.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(name) = module_name(&path) {
                    files.insert(name, path);
                }
            }
        }
        let mut order: Vec<(String, Vec<u8>)> = Vec::new();
        for name in names {
            self.add_module(kernel, &files, &name.replace('-', "_"), &mut order)?;
        }
        let mut guest = Vec::new();
        for (name, data) in order {
            let path = format!("lib/modules/{}/{name}.ko", kernel.release);
            self.file(&path, data, 0o644);
            guest.push(format!("/{path}"));
        }
        Ok(guest)
    }

    /// Appends `name` to `order` after everything it depends on.
    fn add_module(
        &mut self,
        kernel: &Kernel,
        files: &BTreeMap<String, PathBuf>,
        name: &str,
        order: &mut Vec<(String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        if order.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let host = files
            .get(name)
            .with_context(|| format!("kernel {}: no module {name} under {}", kernel.name, kernel.modules.display()))?;
        let data = decompress(host).with_context(|| format!("kernel {}: module {}", kernel.name, host.display()))?;
        for dep in depends(&data) {
            self.add_module(kernel, files, &dep, order)?;
        }
        order.push((name.to_string(), data));
        Ok(())
    }

    /// Writes the archive to `path` and returns it.
    pub fn write_to(&self, path: &Path) -> anyhow::Result<PathBuf> {
        let mut out = Vec::new();
        let header = |out: &mut Vec<u8>, ino: usize, name: &str, mode: u32, size: usize| {
            let fields = [ino as u32, mode, 0, 0, 1, 0, size as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
            out.extend_from_slice(b"070701");
            for f in fields {
                out.extend_from_slice(format!("{f:08x}").as_bytes());
            }
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            pad4(out);
        };
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            match entry {
                Entry::Dir => header(&mut out, ino + 1, name, 0o040755, 0),
                Entry::File { data, mode } => {
                    header(&mut out, ino + 1, name, 0o100000 | mode, data.len());
                    out.extend_from_slice(data);
                    pad4(&mut out);
                }
                Entry::Symlink(target) => {
                    header(&mut out, ino + 1, name, 0o120777, target.len());
                    out.extend_from_slice(target.as_bytes());
                    pad4(&mut out);
                }
            }
        }
        header(&mut out, 0, "TRAILER!!!", 0, 0);
        std::fs::write(path, out).with_context(|| format!("write {}", path.display()))?;
        Ok(path.to_path_buf())
    }
}

/// A module's name from its file name (`null_blk.ko.xz` -> `null_blk`).
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_string_lossy();
    let (name, _) = file.split_once(".ko")?;
    Some(name.replace('-', "_"))
}

/// The `depends=` entry of a module's .modinfo strings: the modules it
/// needs loaded first.
fn depends(module: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = module.windows(key.len()).position(|w| w == key) else { return Vec::new() };
    let rest = &module[at + key.len()..];
    let value = &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())];
    String::from_utf8_lossy(value).split(',').filter(|d| !d.is_empty()).map(|d| d.replace('-', "_")).collect()
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A module file's contents, decompressed (Debian ships .ko, .ko.xz or
/// .ko.zst depending on the release; busybox's insmod wants plain ELF).
fn decompress(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return std::fs::read(path).with_context(|| format!("read {}", path.display()));
    };
    let out = Command::new(tool).args(["-dc"]).arg(path).output().with_context(|| format!("run {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// How to boot.
#[derive(Clone, Debug)]
pub struct Boot {
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Killed after this long (and the boot fails).
    pub timeout: Duration,
    /// Extra kernel command-line words.
    pub cmdline: String,
}

impl Default for Boot {
    fn default() -> Self {
        Boot { memory_mib: 1024, timeout: Duration::from_secs(240), cmdline: String::new() }
    }
}

/// The console output of a boot and how long it took.
pub struct Booted {
    pub console: String,
    pub elapsed: Duration,
}

/// Boots `kernel` with `initramfs` (its /init runs as pid 1) under
/// qemu-system-x86_64 with TCG and one vCPU, and returns everything the
/// serial console printed once the guest powered off. A guest still
/// running at the timeout is killed and the error carries its output.
pub fn boot(kernel: &Kernel, initramfs: &Path, how: &Boot) -> anyhow::Result<Booted> {
    let start = Instant::now();
    let console = std::env::temp_dir().join(format!("vantage-vm-{}-{}.log", kernel.name, std::process::id()));
    let log = std::fs::File::create(&console).with_context(|| format!("create {}", console.display()))?;
    let cmdline = format!("console=ttyS0 panic=-1 rdinit=/init {}", how.cmdline);
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-smp", "1", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"])
        .args(["-m", &how.memory_mib.to_string()])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &cmdline])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let result = loop {
        if let Some(exit) = child.try_wait()? {
            break Ok(exit);
        }
        if start.elapsed() > how.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break Err(());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read(&console).unwrap_or_default();
    let _ = std::fs::remove_file(&console);
    let text = String::from_utf8_lossy(&text).replace("\r\n", "\n");
    match result {
        Ok(exit) if exit.success() => Ok(Booted { console: text, elapsed: start.elapsed() }),
        Ok(exit) => bail!("kernel {}: qemu exited with {exit}; console:\n{text}", kernel.name),
        Err(()) => bail!("kernel {}: still running after {:?}, killed; console:\n{text}", kernel.name, how.timeout),
    }
}

/// The lines between a line `=== <marker> begin ===` and `=== <marker>
/// end ===` (what an init script prints around a command's output).
pub fn between<'a>(console: &'a str, marker: &str) -> Option<&'a str> {
    let begin = format!("=== {marker} begin ===\n");
    let end = format!("=== {marker} end ===");
    let from = console.find(&begin)? + begin.len();
    let to = from + console[from..].find(&end)?;
    Some(&console[from..to])
}

/// Shell lines that print `command`'s output between `marker`s (see
/// [`between`]).
pub fn marked(marker: &str, command: &str) -> String {
    format!("echo '=== {marker} begin ==='\n{command}\necho '=== {marker} end ==='\n")
}
