//! Docker mode: the lab's stack as containers, driven like the in-process
//! [`Stack`](crate::stack::Stack), so a scenario gives the same transcript in
//! both once addresses are named: [`DockerStack::services`] for the services
//! (as in-process), and [`DockerStack::as_loopback`] for what plays the part
//! of 127.0.0.1 in-process (the host's clients arrive from the network's
//! gateway; the services see the proxy's container address).
//!
//! ```text
//!  host (127.0.0.1 only)          Docker network proxy-lab-SUFFIX
//!  ─────────────────────          ────────────────────────────────────────────────
//!  127.0.0.1:P  ──published──►  proxy-SUFFIX :P (http), :Q (https),
//!  127.0.0.1:Q  ──published──►      │  :L1..L4 (layer 4, [[stream]])
//!  127.0.0.1:L* ──published──►      │  upstreams by DNS name, re-resolved
//!                                   ├──► frontend-SUFFIX:3000   ┐ each a "pod": a holder
//!                                   ├──► tasks-api-SUFFIX:8000  │ container owns the name,
//!                                   ├──► whoami-N-SUFFIX:5000   │ the address and the hostname;
//!                                   └──► whoami-l4-SUFFIX:5000  ┘ the service runs beside it
//! ```
//!
//! # Images, without a registry
//! No image is pulled. [`build_images`] (the `lab images` command) builds the
//! binaries with cargo and `docker import`s, for each image, a root folder
//! holding only the binary and the libraries `ldd` lists: `proxy-lab/proxy`,
//! `proxy-lab/frontend`, `proxy-lab/whoami`, `proxy-lab/tasks-api`, tagged
//! `local`. Each image carries a label with a key of its contents, so a second
//! build imports nothing when nothing changed.
//!
//! # Why each service is a pod of two containers
//! When a container stops, its address leaves the network: a connection to it
//! is never refused, it hangs until the proxy's `connect_timeout` (a 504 after
//! 10 s). In-process, a stopped service's port refuses at once (a 502). To
//! keep the two transcripts alike, every service runs the way Kubernetes runs
//! a pod: a small holder container (the whoami binary listening on its own
//! loopback) owns the network name, the address and the hostname, and the
//! service's container joins its network namespace (`container:` network
//! mode). [`DockerStack::stop_service`] stops the service's container only, so
//! its address stays up and refuses connections, like a crashed process; the
//! proxy is not told. whoami answers with its hostname, which is the pod's.
//!
//! # Names
//! Every boot has a random suffix: the network is `proxy-lab-SUFFIX` and the
//! containers `SERVICE-SUFFIX` (the holder, whose name Docker's DNS answers)
//! and `SERVICE-SUFFIX-app`, so parallel runs never clash. The proxy config
//! uses those names (`whoami-2-k3f9x2:5000`); the proxy resolves them to
//! container addresses, and [`DockerStack::services`] maps each address back
//! to the service's name for transcripts.
//!
//! # The proxy config
//! `lab/stack/proxy.toml` and its layer-4 part `lab/stack/layer4.toml`,
//! rendered as in-process but with container names for the services,
//! `0.0.0.0:PORT` listeners (PORT being the same number as the port
//! published on 127.0.0.1, so the redirects the proxy writes name the port
//! the host reaches), the TLS passthrough reaching the HTTPS listener over
//! the container's own loopback, and the CA copied into the container (made
//! on the host first, so [`DockerStack::ca_root_pem`] is known). One addition:
//! `trace_from` also lists the network's gateway, the address the host's
//! clients come from through the published ports, and an access rule that
//! allows 127.0.0.1 allows the gateway instead (the same clients, the same
//! rule number in a trace).
//!
//! Containers are removed by [`DockerStack::shutdown`], or when the stack is
//! dropped (inside a tokio runtime) by testcontainers. A process killed
//! outright leaves them behind; they carry the label `proxy-lab.stack`:
//! `docker rm -f $(docker ps -aq --filter label=proxy-lab.stack)`.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use proxy::local_ca::{LocalCa, ROOT_CERT_FILE, ROOT_KEY_FILE};
use proxy::{Config, ConfigErrors};
use testcontainers::bollard::Docker;
use testcontainers::bollard::models::{HostConfig, PortBinding};
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{
    ContainerAsync, CopyTargetOptions, GenericImage, ImageExt, TestcontainersError,
};

use crate::stack::{
    LAYER4_CONFIG_TEMPLATE, LabStack, LabStackError, PROXY_CONFIG_TEMPLATE, STREAM_LISTENERS,
    WHOAMI_L4, WHOAMI_REPLICAS, render_template,
};

/// The repository prefix of the lab's images: `proxy-lab/NAME:TAG`.
pub const IMAGE_REPOSITORY: &str = "proxy-lab";
/// The tag [`build_images`] gives and [`DockerStack::boot`] uses by default.
pub const DEFAULT_TAG: &str = "local";
/// The image label holding a key of the image's contents.
const BUILD_LABEL: &str = "proxy-lab.build";
/// The container label naming the stack (its random suffix).
const STACK_LABEL: &str = "proxy-lab.stack";
/// Where the proxy's config and local CA go inside its container.
const CONTAINER_CONFIG: &str = "/etc/proxy-lab/proxy.toml";
const CONTAINER_CA_DIR: &str = "/etc/proxy-lab/ca";
/// The proxy's admin listener (metrics) inside its container: loopback, not published.
const CONTAINER_ADMIN_ADDR: &str = "127.0.0.1:9090";
/// What to run to build the images.
const IMAGES_COMMAND: &str = "cargo run -p lab -- images";

/// One image: which binary, how it starts. `compose/Dockerfile` (the
/// multi-stage build for machines with a registry) makes the same images; a
/// test (lab/tests/compose.rs) checks that the two agree.
#[derive(Debug)]
pub struct ImageSpec {
    /// `proxy-lab/{name}:TAG`; also the binary's name, installed as
    /// `/usr/local/bin/{name}`, the image's entrypoint.
    pub name: &'static str,
    /// The port it listens on (documented with EXPOSE).
    pub port: u16,
    /// Environment baked into the image.
    pub env: &'static [(&'static str, &'static str)],
    /// Empty folders besides /tmp.
    pub dirs: &'static [&'static str],
}

/// Every image `lab images` builds.
pub const IMAGES: [ImageSpec; 4] = [
    ImageSpec {
        name: "proxy",
        port: 8080,
        env: &[("RUST_LOG", "info")],
        dirs: &["etc/proxy-lab"],
    },
    ImageSpec {
        name: "frontend",
        port: 3000,
        env: &[("LISTEN", "0.0.0.0:3000")],
        dirs: &[],
    },
    ImageSpec {
        name: "whoami",
        port: 5000,
        env: &[("LISTEN", "0.0.0.0:5000")],
        dirs: &[],
    },
    ImageSpec {
        name: "tasks-api",
        port: 8000,
        env: &[
            ("LISTEN", "0.0.0.0:8000"),
            ("DB_FILE_PATH", "/data/tasks.db"),
        ],
        dirs: &["data"],
    },
];

/// `proxy-lab/NAME:TAG`.
pub fn image_name(name: &str, tag: &str) -> String {
    format!("{IMAGE_REPOSITORY}/{name}:{tag}")
}

/// Every image of the lab, with `tag`.
pub fn image_names(tag: &str) -> Vec<String> {
    IMAGES
        .iter()
        .map(|spec| image_name(spec.name, tag))
        .collect()
}

/// Why Docker mode could not do what was asked. Each message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No Docker daemon answers (or no docker command).
    #[error("Docker is not available: {0}")]
    Unavailable(String),
    /// An image the stack needs has not been built.
    #[error("image {image} is missing: run `{IMAGES_COMMAND}`")]
    ImageMissing {
        /// `proxy-lab/NAME:TAG`.
        image: String,
    },
    /// Docker could not be asked something.
    #[error("cannot {what}: {source}\n  = help: is the Docker daemon running? (`docker info`)")]
    Api {
        /// What was asked.
        what: String,
        /// What Docker's client said.
        #[source]
        source: Box<testcontainers::bollard::errors::Error>,
    },
    /// `cargo build` of the binaries failed.
    #[error("`{command}` failed ({status}): the compiler's messages are above")]
    CargoBuild {
        /// The cargo command.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// cargo built, but did not report one of the binaries.
    #[error(
        "`{command}` did not build the `{binary}` binary: is it still a [[bin]] of proxy or backends \
         (and, for `cargo test`, do they still have integration tests)?"
    )]
    BinaryNotBuilt {
        /// The cargo command.
        command: String,
        /// The binary.
        binary: String,
    },
    /// A command could not be run, or a file written.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{what} failed: {message}")]
    CommandFailed {
        /// The command.
        what: String,
        /// Its standard error, or its exit status.
        message: String,
    },
    /// A container could not be started (or stopped, or inspected).
    #[error("cannot {what} the {service} container: {source}")]
    Container {
        /// `start`, `stop`, ...
        what: &'static str,
        /// The service.
        service: String,
        /// What testcontainers said.
        #[source]
        source: Box<TestcontainersError>,
    },
    /// The local CA could not be made or read.
    #[error("cannot prepare the local CA for the proxy container: {0}")]
    Ca(#[from] Box<proxy::local_ca::CaError>),
    /// The rendered proxy config is invalid (a bug in the template).
    #[error("the lab's proxy config is invalid:\n{0}")]
    ProxyConfig(#[from] ConfigErrors),
    /// A container started, but did not get ready in time.
    #[error("the {service} container was not ready after {waited:?}: {reason}\n{logs}")]
    NotReady {
        /// The service.
        service: String,
        /// How long it was given.
        waited: Duration,
        /// What was missing.
        reason: String,
        /// The end of its logs.
        logs: String,
    },
    /// No service of that name runs in the stack.
    #[error("no service named `{0}` in the stack")]
    UnknownService(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DockerError {
    let what = what.into();
    move |source| DockerError::Io { what, source }
}

// ---------------------------------------------------------------------------
// Is Docker there?

/// `Ok` when a Docker daemon answers the `docker` command (which
/// [`build_images`] needs too), else the reason, fit for `skipped: {reason}`.
/// Honours `DOCKER_HOST`, as testcontainers does.
pub fn docker_available() -> Result<(), String> {
    let mut child = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| {
            format!(
                "cannot run the docker command ({err}): install Docker Engine and start its daemon"
            )
        })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("`docker version` got no answer within 20 s".into());
            }
            Err(err) => return Err(format!("cannot wait for `docker version`: {err}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let reason = stderr
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .unwrap_or("no message");
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".into());
    Err(format!(
        "no Docker daemon answers at {host} ({reason}); start it (`sudo systemctl start docker`) or set DOCKER_HOST"
    ))
}

// ---------------------------------------------------------------------------
// Images

/// How to build the images.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Build the binaries with `--release` (smaller and faster; a second full
    /// compile if only debug builds were made so far).
    pub release: bool,
    /// The workspace to build in: this checkout by default.
    pub workspace_dir: PathBuf,
    /// The tag the images get.
    pub tag: String,
    /// The cargo to run: `$CARGO` (set when run by cargo), else `cargo`.
    pub cargo: PathBuf,
    /// Which cargo command builds the binaries.
    pub build: BinaryBuild,
}

/// Which cargo command builds the binaries. Both give the same programs; they
/// differ in what cargo can reuse. Features are unified over the packages a
/// command builds, so `cargo build -p proxy` compiles tokio, serde, hyper, ...
/// with fewer features than `cargo test --workspace` does, as other crates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryBuild {
    /// `cargo build -p proxy -p backends --bins`: the least to compile on its own.
    Bins,
    /// `cargo test --workspace --no-run`, which builds these binaries for the
    /// integration tests of proxy and backends: nothing to compile after
    /// `cargo test --workspace` (as in CI), where [`BinaryBuild::Bins`] would
    /// compile most dependencies a second time.
    WorkspaceTests,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            release: false,
            workspace_dir: Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            tag: DEFAULT_TAG.to_owned(),
            cargo: std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from),
            build: BinaryBuild::Bins,
        }
    }
}

/// One image [`build_images`] made or found up to date.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `proxy-lab/NAME:TAG`.
    pub image: String,
    /// The binary inside it.
    pub binary: PathBuf,
    /// The root folder's size: the binary and its libraries.
    pub bytes: u64,
    /// `false` when the image already held exactly these files.
    pub imported: bool,
}

/// Builds the binaries (`cargo build -p proxy -p backends --bins`, or as
/// [`BuildOptions::build`] says) and makes
/// every image of the lab from them with `docker import`: no registry, no base
/// image, no Dockerfile. An image whose files did not change is left alone.
pub fn build_images(options: &BuildOptions) -> Result<Vec<BuiltImage>, DockerError> {
    docker_available().map_err(DockerError::Unavailable)?;
    let binaries = cargo_build(options)?;
    let mut built = Vec::new();
    for spec in &IMAGES {
        let binary = binaries
            .get(spec.name)
            .ok_or_else(|| DockerError::BinaryNotBuilt {
                command: cargo_command(options),
                binary: spec.name.to_owned(),
            })?;
        built.push(import_image(spec, binary, &options.tag)?);
    }
    Ok(built)
}

fn cargo_args(build: BinaryBuild) -> &'static [&'static str] {
    match build {
        BinaryBuild::Bins => &["build", "-p", "proxy", "-p", "backends", "--bins"],
        BinaryBuild::WorkspaceTests => &["test", "--workspace", "--no-run"],
    }
}

/// The cargo command, as a person would type it.
fn cargo_command(options: &BuildOptions) -> String {
    cargo_command_line(options.build, options.release)
}

/// The cargo command that builds the images' binaries, as a person would type
/// it: `cargo build -p proxy -p backends --bins --release` for
/// `lab images --release` (and for `compose/Dockerfile`).
pub fn cargo_command_line(build: BinaryBuild, release: bool) -> String {
    let release = if release { " --release" } else { "" };
    format!("cargo {}{release}", cargo_args(build).join(" "))
}

/// Runs cargo and returns each binary's path, as cargo reported it (`lab
/// soak` uses it for the proxy binary).
pub fn cargo_build(options: &BuildOptions) -> Result<HashMap<String, PathBuf>, DockerError> {
    let mut command = Command::new(&options.cargo);
    command
        .current_dir(&options.workspace_dir)
        .args(cargo_args(options.build))
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if options.release {
        command.arg("--release");
    }
    // Run from a test or `cargo run`, this process has the variables cargo
    // sets for the programs it runs (CARGO_PKG_NAME=lab, ...). Build scripts
    // that watch them (ring's does) would rerun, and every later build would
    // rebuild them back: give cargo a clean environment of that kind.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_by_cargo = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_BIN_EXE_")
            || matches!(
                name,
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_by_cargo {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().map_err(io_error(format!(
        "run {} (is cargo installed?)",
        options.cargo.display()
    )))?;
    let mut binaries = HashMap::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(io_error("read cargo's messages"))?;
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            // Programs only: not the test harnesses `cargo test` builds.
            if message["reason"] != "compiler-artifact"
                || message["profile"]["test"] != false
                || message["target"]["kind"][0] != "bin"
            {
                continue;
            }
            if let (Some(name), Some(exe)) = (
                message["target"]["name"].as_str(),
                message["executable"].as_str(),
            ) {
                binaries.insert(name.to_owned(), PathBuf::from(exe));
            }
        }
    }
    let status = child.wait().map_err(io_error("wait for cargo"))?;
    if !status.success() {
        return Err(DockerError::CargoBuild {
            command: cargo_command(options),
            status,
        });
    }
    Ok(binaries)
}

/// The shared libraries `binary` loads, as `ldd` lists them (the dynamic
/// loader included; the kernel's vdso is not a file).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, DockerError> {
    let output = Command::new("ldd")
        .arg(binary)
        // As the container's loader will: no extra folders (cargo adds some for tests).
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .output()
        .map_err(io_error("run ldd (part of libc-bin on Debian)"))?;
    if !output.status.success() {
        return Err(DockerError::CommandFailed {
            what: format!("ldd {}", binary.display()),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let mut libraries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// A key of everything that goes into an image: the spec, and each file's
/// path, size and modification time.
fn content_key(spec: &ImageSpec, files: &[(PathBuf, PathBuf)]) -> Result<String, DockerError> {
    let mut hasher = DefaultHasher::new();
    (spec.name, spec.port, spec.env, spec.dirs).hash(&mut hasher);
    for (source, target) in files {
        let meta = std::fs::metadata(source).map_err(io_error(format!(
            "read the metadata of {}",
            source.display()
        )))?;
        (target, meta.len(), meta.modified().ok()).hash(&mut hasher);
    }
    Ok(format!("{:016x}", hasher.finish()))
}

/// The id and build label of `image`, if it exists.
fn existing_image(image: &str) -> Result<Option<(String, String)>, DockerError> {
    let output = Command::new("docker")
        .args(["image", "inspect", image])
        .stdin(Stdio::null())
        .output()
        .map_err(io_error("run docker image inspect"))?;
    if !output.status.success() {
        return Ok(None);
    }
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let id = parsed[0]["Id"].as_str().unwrap_or_default().to_owned();
    let key = parsed[0]["Config"]["Labels"][BUILD_LABEL]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(Some((id, key)))
}

fn import_image(spec: &ImageSpec, binary: &Path, tag: &str) -> Result<BuiltImage, DockerError> {
    let image = image_name(spec.name, tag);
    let entrypoint = format!("/usr/local/bin/{}", spec.name);
    // (source on the host, path inside the image)
    let mut files = vec![(binary.to_path_buf(), PathBuf::from(&entrypoint))];
    for library in shared_libraries(binary)? {
        files.push((library.clone(), library));
    }
    let key = content_key(spec, &files)?;
    let existing = existing_image(&image)?;
    let mut bytes = 0;
    for (source, _) in &files {
        bytes += std::fs::metadata(source).map(|m| m.len()).unwrap_or(0);
    }
    if existing.as_ref().is_some_and(|(_, old)| *old == key) {
        return Ok(BuiltImage {
            image,
            binary: binary.to_path_buf(),
            bytes,
            imported: false,
        });
    }

    let root = tempfile::tempdir().map_err(io_error("create a temporary folder"))?;
    for (source, target) in &files {
        let inside = root.path().join(target.strip_prefix("/").unwrap_or(target));
        if let Some(parent) = inside.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_error(format!("create {}", parent.display())))?;
        }
        // fs::copy follows symbolic links, like `cp -L`.
        std::fs::copy(source, &inside).map_err(io_error(format!(
            "copy {} into the image",
            source.display()
        )))?;
    }
    for dir in spec.dirs.iter().chain(&["tmp"]) {
        std::fs::create_dir_all(root.path().join(dir))
            .map_err(io_error(format!("create /{dir} in the image")))?;
    }
    set_mode(&root.path().join("tmp"), 0o1777)?;

    let mut changes = vec![
        format!("ENTRYPOINT [\"{entrypoint}\"]"),
        format!("EXPOSE {}", spec.port),
        format!("LABEL {BUILD_LABEL}={key}"),
        "WORKDIR /".to_owned(),
    ];
    for (name, value) in spec.env {
        changes.push(format!("ENV {name}={value}"));
    }
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(root.path())
        .args(["-c", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(io_error("run tar"))?;
    let archive = tar.stdout.take().map_or_else(Stdio::null, Stdio::from);
    let mut import = Command::new("docker");
    import.arg("import");
    for change in &changes {
        import.args(["--change", change]);
    }
    let imported = import
        .args(["-", &image])
        .stdin(archive)
        .output()
        .map_err(io_error("run docker import"))?;
    let tar_status = tar.wait().map_err(io_error("wait for tar"))?;
    if !imported.status.success() || !tar_status.success() {
        return Err(DockerError::CommandFailed {
            what: format!("docker import of {image}"),
            message: format!(
                "{} (tar: {tar_status})",
                String::from_utf8_lossy(&imported.stderr).trim()
            ),
        });
    }
    // The previous image lost its tag: remove it rather than leave it dangling
    // (this fails, harmlessly, while a container still uses it).
    if let Some((old_id, _)) = existing.filter(|(id, _)| !id.is_empty()) {
        let _ = Command::new("docker")
            .args(["image", "rm", &old_id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    Ok(BuiltImage {
        image,
        binary: binary.to_path_buf(),
        bytes,
        imported: true,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), DockerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_error(format!("set the mode of {}", path.display())))
}

/// The images of `tag` that Docker does not have.
pub async fn missing_images(tag: &str) -> Result<Vec<String>, DockerError> {
    let docker = connect()?;
    let mut missing = Vec::new();
    for image in image_names(tag) {
        match docker.inspect_image(&image).await {
            Ok(_) => {}
            Err(testcontainers::bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }) => missing.push(image),
            Err(source) => {
                return Err(DockerError::Api {
                    what: format!("inspect image {image}"),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(missing)
}

fn connect() -> Result<Docker, DockerError> {
    Docker::connect_with_defaults().map_err(|source| DockerError::Api {
        what: "connect to Docker".into(),
        source: Box::new(source),
    })
}

// ---------------------------------------------------------------------------
// The stack

/// How to boot a [`DockerStack`].
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The proxy's plain-HTTP port on 127.0.0.1; 0 picks a free one. The proxy
    /// listens on the same port number inside its container, so the redirects
    /// it writes name the port the host reaches.
    pub proxy_port: u16,
    /// The proxy's HTTPS port on 127.0.0.1; 0 picks a free one.
    pub proxy_tls_port: u16,
    /// A local CA to copy into the proxy container; `None` makes a fresh one
    /// in a temporary folder. (Certificates the proxy issues stay inside.)
    pub ca_dir: Option<PathBuf>,
    /// The images' tag.
    pub tag: String,
    /// How long each container may take to become ready.
    pub startup_timeout: Duration,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            proxy_port: 0,
            proxy_tls_port: 0,
            ca_dir: None,
            tag: DEFAULT_TAG.to_owned(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// A service of the stack: its pod's holder and its own container.
struct DockerService {
    name: String,
    /// Where the proxy reaches it: the holder's address, the service's port.
    addr: SocketAddr,
    /// The service's container (stopped and started on demand). Declared
    /// before `holder`, so it is removed first.
    app: ContainerAsync<GenericImage>,
    /// Owns the DNS name, the address and the hostname; never stopped.
    holder: ContainerAsync<GenericImage>,
    /// How many times the service's container has started.
    starts: usize,
}

/// The proxy and the sample services, each in its own container on one
/// Docker network; only the proxy's ports are published, on 127.0.0.1.
pub struct DockerStack {
    /// Where the proxy listens for plain HTTP (published on 127.0.0.1).
    pub proxy_addr: SocketAddr,
    /// Where the proxy listens for HTTPS (published on 127.0.0.1).
    pub proxy_tls_addr: SocketAddr,
    /// The layer-4 listeners by name ([`STREAM_LISTENERS`]), each published
    /// on 127.0.0.1 under the port number it has inside the container.
    pub streams: Vec<(&'static str, SocketAddr)>,
    /// The local CA's root certificate (PEM): what an HTTPS client must trust.
    pub ca_root_pem: String,
    /// The local CA's folder on the host (copied into the proxy's container).
    pub ca_dir: PathBuf,
    /// The proxy configuration, as it was rendered and given to the proxy.
    pub proxy_config: String,
    /// The Docker network of this stack.
    pub network: String,
    /// The proxy container's address on the network: the TCP peer the
    /// services see (in-process: 127.0.0.1).
    pub proxy_ip: IpAddr,
    /// The network's gateway: the address the proxy sees the host's clients
    /// come from through the published ports (in-process: 127.0.0.1).
    pub gateway_ip: IpAddr,
    /// Declared first: removed before the services.
    proxy: Option<ContainerAsync<GenericImage>>,
    /// How many of each layer-4 listener's access-log lines
    /// [`client_seen_by_proxy`](LabStack::client_seen_by_proxy) has read.
    logged_connections: std::sync::Mutex<HashMap<String, usize>>,
    services: Vec<DockerService>,
    /// Kept so a temporary CA lives as long as the stack.
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for DockerStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerStack")
            .field("proxy_addr", &self.proxy_addr)
            .field("proxy_tls_addr", &self.proxy_tls_addr)
            .field("network", &self.network)
            .field("services", &self.services())
            .finish_non_exhaustive()
    }
}

/// A service of the stack: its name (the pod's), the image it runs, the
/// port it listens on, and what it is started with besides the image's
/// defaults.
#[derive(Debug, Clone, Copy)]
struct ServiceSpec {
    name: &'static str,
    image: &'static str,
    port: u16,
    args: &'static [&'static str],
}

/// The services, in boot order (as in-process): the whoami behind the
/// layer-4 listeners reads PROXY protocol headers, as in-process.
fn service_specs() -> Vec<ServiceSpec> {
    let spec = |name, image, port| ServiceSpec {
        name,
        image,
        port,
        args: &[],
    };
    let mut specs = vec![
        spec("frontend", "frontend", 3000),
        spec("tasks-api", "tasks-api", 8000),
    ];
    specs.extend(
        WHOAMI_REPLICAS
            .iter()
            .map(|name| spec(name, "whoami", 5000)),
    );
    specs.push(ServiceSpec {
        args: &["--proxy-protocol"],
        ..spec(WHOAMI_L4, "whoami", 5000)
    });
    specs
}

/// A scenario runs on the Docker stack as on the in-process one; its
/// transcript reads the same once the containers' addresses are named.
impl LabStack for DockerStack {
    fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    fn proxy_tls_addr(&self) -> SocketAddr {
        self.proxy_tls_addr
    }

    fn ca_root_pem(&self) -> &str {
        &self.ca_root_pem
    }

    /// In order: the proxy's listeners as seen inside its container, the
    /// services' container addresses, the proxy's own address (its side of
    /// upstream connections) and the gateway (where the host's clients come
    /// from) as 127.0.0.1, then the published ports.
    fn transcript_names(&self) -> Vec<(String, String)> {
        let listeners = self.listener_names();
        let mut names: Vec<(String, String)> = listeners
            .iter()
            .map(|(addr, name)| (format!("{}:{}", self.proxy_ip, addr.port()), name.clone()))
            .collect();
        names.extend(
            self.services()
                .into_iter()
                .map(|(name, addr)| (addr, format!("<{name}>"))),
        );
        names.push((self.proxy_ip.to_string(), "127.0.0.1".to_owned()));
        names.push((self.gateway_ip.to_string(), "127.0.0.1".to_owned()));
        // The layer-4 listeners as published (`proxy_names` below names the
        // first two, and the HTTPS port in redirects).
        names.extend(
            listeners
                .into_iter()
                .skip(2)
                .map(|(addr, name)| (addr.to_string(), name)),
        );
        names.extend(crate::stack::proxy_names(
            self.proxy_addr,
            self.proxy_tls_addr,
        ));
        names
    }

    fn streams(&self) -> &[(&'static str, SocketAddr)] {
        &self.streams
    }

    /// Published ports are forwarded by docker-proxy, a layer-4 proxy of
    /// Docker's own that sends no PROXY header: the lab's proxy accepts the
    /// connection from docker-proxy's end (the network's gateway and a port
    /// of docker-proxy's), not from the client's. Which one it was, the
    /// proxy's access log says: the next line of that listener not yet
    /// accounted for (one per connection, written when it ends).
    async fn client_seen_by_proxy(&self, via: &str) -> Result<Option<SocketAddr>, LabStackError> {
        let Some(port) = self.stream_addr(via).map(|addr| addr.port()) else {
            return Ok(None);
        };
        let Some(proxy) = &self.proxy else {
            return Ok(None);
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = proxy.stdout_to_vec().await?;
            let clients = stream_log_clients(&String::from_utf8_lossy(&logs), port);
            let next = {
                let mut accounted = self.logged_connections.lock().expect("not poisoned");
                let seen = accounted.entry(via.to_owned()).or_default();
                let next = clients.into_iter().nth(*seen);
                *seen += usize::from(next.is_some());
                next
            };
            if let Some(client) = next {
                return client.map(Some).map_err(|line| {
                    format!("the proxy's access log names no client address: {line}").into()
                });
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the proxy logged no connection to its layer-4 listener {via} within 10 s \
                     (its access log must go to standard output, as in lab/stack/proxy.toml)"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop_service(&mut self, name: &str) -> Result<(), LabStackError> {
        Ok(DockerStack::stop_service(self, name).await?)
    }

    async fn start_service(&mut self, name: &str) -> Result<(), LabStackError> {
        Ok(DockerStack::start_service(self, name).await?)
    }

    async fn shutdown(self) {
        DockerStack::shutdown(self).await;
    }
}

impl DockerStack {
    /// Boots every service in its pod on a fresh network, then the proxy in
    /// front of them, and waits until the proxy has resolved every upstream.
    pub async fn boot(options: DockerOptions) -> Result<DockerStack, DockerError> {
        tokio::task::spawn_blocking(docker_available)
            .await
            .map_err(|err| DockerError::Unavailable(err.to_string()))?
            .map_err(DockerError::Unavailable)?;
        if let Some(image) = missing_images(&options.tag).await?.into_iter().next() {
            return Err(DockerError::ImageMissing { image });
        }
        let suffix: String = (0..6)
            .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
            .collect();
        let network = format!("proxy-lab-{suffix}");

        // The CA first: if it cannot be made, no container is started.
        let temp = match options.ca_dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().map_err(io_error("create a temporary folder"))?),
        };
        let ca_dir = match (&options.ca_dir, &temp) {
            (Some(dir), _) => dir.clone(),
            (None, Some(temp)) => temp.path().join("ca"),
            (None, None) => PathBuf::from("ca"),
        };
        let (ca, _) = LocalCa::open_or_create(&ca_dir).map_err(Box::new)?;
        let ca_root_pem = ca.root_cert_pem().to_owned();

        let specs = service_specs();
        let holders = try_join_all(
            specs
                .iter()
                .map(|spec| start_holder(spec.name, &suffix, &network, &options)),
        )
        .await?;
        let apps = try_join_all(
            specs
                .iter()
                .zip(&holders)
                .map(|(spec, holder)| start_app(spec, &suffix, holder.id(), &options)),
        )
        .await?;
        let mut services = Vec::new();
        for ((spec, holder), app) in specs.iter().zip(holders).zip(apps) {
            let ip =
                holder
                    .get_bridge_ip_address()
                    .await
                    .map_err(|source| DockerError::Container {
                        what: "inspect",
                        service: spec.name.to_owned(),
                        source: Box::new(source),
                    })?;
            services.push(DockerService {
                name: spec.name.to_owned(),
                addr: SocketAddr::new(ip, spec.port),
                app,
                holder,
                starts: 1,
            });
        }

        let gateway_ip = network_gateway(&network).await?;

        let mut tries = 0;
        let (proxy, proxy_config, ports) = loop {
            tries += 1;
            let ports = ProxyPorts {
                plain: pick_port(options.proxy_port)?,
                tls: pick_port(options.proxy_tls_port)?,
                streams: STREAM_LISTENERS
                    .into_iter()
                    .map(|name| Ok((name, pick_port(0)?)))
                    .collect::<Result<_, DockerError>>()?,
            };
            let config_text = trust_gateway(&render_config(&suffix, &ports), gateway_ip);
            let config = Config::parse(&config_text, "lab/stack/proxy.toml")?;
            let name = if tries == 1 {
                format!("proxy-{suffix}")
            } else {
                format!("proxy-{suffix}-{tries}")
            };
            let request = proxy_request(
                &name,
                &network,
                &config_text,
                &ca_dir,
                &ports,
                &suffix,
                &options,
            )?;
            match request.start().await {
                Ok(container) => {
                    wait_for_resolution(&container, &config, options.startup_timeout).await?;
                    break (container, config_text, ports);
                }
                // A free port taken between the check and Docker's bind: try others.
                Err(err)
                    if tries < 3
                        && options.proxy_port == 0
                        && options.proxy_tls_port == 0
                        && is_port_conflict(&err) =>
                {
                    remove_container(&name).await;
                }
                Err(source) => {
                    return Err(DockerError::Container {
                        what: "start",
                        service: "proxy".into(),
                        source: Box::new(source),
                    });
                }
            }
        };

        let proxy_ip =
            proxy
                .get_bridge_ip_address()
                .await
                .map_err(|source| DockerError::Container {
                    what: "inspect",
                    service: "proxy".into(),
                    source: Box::new(source),
                })?;

        let on_loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Ok(DockerStack {
            proxy_addr: on_loopback(ports.plain),
            proxy_tls_addr: on_loopback(ports.tls),
            streams: ports
                .streams
                .iter()
                .map(|(name, port)| (*name, on_loopback(*port)))
                .collect(),
            ca_root_pem,
            ca_dir,
            proxy_config,
            network,
            proxy_ip,
            gateway_ip,
            proxy: Some(proxy),
            logged_connections: std::sync::Mutex::default(),
            services,
            _temp: temp,
        })
    }

    /// Every service's name and the address the proxy reaches it at
    /// (container address and port, e.g. `172.18.0.4:5000`), in boot order.
    /// These are the addresses the proxy's `Proxy-Status` details and logs
    /// show once it has resolved the names in its config; a transcript turns
    /// them into `<whoami-2>` as it does the in-process loopback addresses.
    pub fn services(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .map(|s| (s.name.clone(), s.addr.to_string()))
            .collect()
    }

    /// The address the proxy reaches the service called `name` at.
    pub fn service_addr(&self, name: &str) -> Option<SocketAddr> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.addr)
    }

    /// `text` (a line of a transcript, a header) with the addresses that stand
    /// for the loopback ones of the in-process stack written as those: the
    /// proxy's listeners as seen inside its container (`PROXY_IP:PORT`)
    /// become [`proxy_addr`](Self::proxy_addr) and
    /// [`proxy_tls_addr`](Self::proxy_tls_addr), the proxy's other ports (its
    /// side of upstream connections) and the gateway (the host's clients)
    /// `127.0.0.1`. Services' addresses are left for [`services`](Self::services)
    /// to name. Applied before a transcript's normalisation, it makes a Docker
    /// run read like an in-process one.
    pub fn as_loopback(&self, text: &str) -> String {
        let mut rules: Vec<(String, String)> = self
            .listener_names()
            .into_iter()
            .map(|(addr, _)| {
                (
                    format!("{}:{}", self.proxy_ip, addr.port()),
                    addr.to_string(),
                )
            })
            .collect();
        rules.push((self.proxy_ip.to_string(), "127.0.0.1".to_owned()));
        rules.push((self.gateway_ip.to_string(), "127.0.0.1".to_owned()));
        replace_addresses(text, &rules)
    }

    /// Every listener of the proxy as published on 127.0.0.1, with the name a
    /// transcript gives it: `<proxy>`, `<proxy-https>`, then the layer-4
    /// ones (`<proxy-l4>`, ...), as in-process.
    fn listener_names(&self) -> Vec<(SocketAddr, String)> {
        let mut names = vec![
            (self.proxy_addr, "<proxy>".to_owned()),
            (self.proxy_tls_addr, "<proxy-https>".to_owned()),
        ];
        names.extend(
            self.streams
                .iter()
                .map(|(name, addr)| (*addr, format!("<proxy-{name}>"))),
        );
        names
    }

    /// Stops the service's container (`docker stop`: SIGTERM, a graceful
    /// shutdown). Its pod keeps the address, so connections are refused, as
    /// for a stopped in-process service. The proxy is not told.
    pub async fn stop_service(&mut self, name: &str) -> Result<(), DockerError> {
        let service = self.service(name)?;
        service
            .app
            .stop_with_timeout(Some(10))
            .await
            .map_err(|source| DockerError::Container {
                what: "stop",
                service: name.to_owned(),
                source: Box::new(source),
            })
    }

    /// Starts the service's container again and waits until it listens.
    /// Starting a running service does nothing. The proxy is not told: it
    /// uses the service again when passive health lets it (`fail_timeout`).
    pub async fn start_service(&mut self, name: &str) -> Result<(), DockerError> {
        let service = self.service(name)?;
        let error = |what| {
            let service = name.to_owned();
            move |source| DockerError::Container {
                what,
                service,
                source: Box::new(source),
            }
        };
        if service.app.is_running().await.map_err(error("inspect"))? {
            return Ok(());
        }
        service.app.start().await.map_err(error("start"))?;
        service.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let logs = service
                .app
                .stdout_to_vec()
                .await
                .map_err(error("read the logs of"))?;
            let text = String::from_utf8_lossy(&logs);
            if text.matches("listening on").count() >= service.starts {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DockerError::NotReady {
                    service: name.to_owned(),
                    waited: Duration::from_secs(15),
                    reason: "it did not say `listening on` after the restart".into(),
                    logs: tail(&text, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes every container (the proxy first) and the network.
    pub async fn shutdown(mut self) {
        if let Some(proxy) = self.proxy.take() {
            let _ = proxy.rm().await;
        }
        for service in std::mem::take(&mut self.services) {
            let _ = service.app.rm().await;
            let _ = service.holder.rm().await;
        }
    }

    fn service(&mut self, name: &str) -> Result<&mut DockerService, DockerError> {
        self.services
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| DockerError::UnknownService(name.to_owned()))
    }
}

/// The client of each access-log line the proxy wrote for a connection to its
/// layer-4 listener on `0.0.0.0:port`, in order, in either format
/// (`combined`: the line's first word; `json`: its `remote_addr`); the line
/// itself where it names no address.
fn stream_log_clients(log: &str, port: u16) -> Vec<Result<SocketAddr, String>> {
    let listener = format!("0.0.0.0:{port}");
    let combined = format!("\"STREAM {listener}\"");
    log.lines()
        .filter_map(|line| {
            let client = if line.starts_with('{') {
                let json: serde_json::Value = serde_json::from_str(line).ok()?;
                if json["stream"].as_str() != Some(listener.as_str()) {
                    return None;
                }
                json["remote_addr"].as_str().and_then(|a| a.parse().ok())
            } else if line.contains(&combined) {
                line.split_whitespace().next().and_then(|a| a.parse().ok())
            } else {
                return None;
            };
            Some(client.ok_or_else(|| line.to_owned()))
        })
        .collect()
}

/// Replaces each rule's address where it stands as a whole address: not
/// preceded by a digit or a dot, not followed by a digit (so `10.0.0.1` never
/// rewrites `10.0.0.12`). Rules are tried in order at each position.
fn replace_addresses(text: &str, rules: &[(String, String)]) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    'scan: while i < text.len() {
        let starts_whole = i == 0 || !(bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.');
        if starts_whole {
            for (from, to) in rules {
                let end = i + from.len();
                if text[i..].starts_with(from.as_str())
                    && !bytes.get(end).is_some_and(u8::is_ascii_digit)
                {
                    out.push_str(to);
                    i = end;
                    continue 'scan;
                }
            }
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The pod's holder: owns the name `{service}-{suffix}` on the network, the
/// address and the hostname. It runs the whoami binary on its own loopback,
/// only to stay up.
async fn start_holder(
    service: &str,
    suffix: &str,
    network: &str,
    options: &DockerOptions,
) -> Result<ContainerAsync<GenericImage>, DockerError> {
    GenericImage::new(format!("{IMAGE_REPOSITORY}/whoami"), options.tag.clone())
        .with_wait_for(WaitFor::message_on_stdout("listening on"))
        .with_cmd([
            "--listen",
            "127.0.0.1:0",
            "--name",
            &format!("{service} (pod holder)"),
        ])
        .with_container_name(format!("{service}-{suffix}"))
        .with_hostname(service)
        .with_network(network)
        .with_label(STACK_LABEL, suffix)
        .with_label("proxy-lab.role", "holder")
        .with_startup_timeout(options.startup_timeout)
        .with_host_config_modifier(|config: &mut HostConfig| {
            // The image's EXPOSEd port stays unpublished: the host reaches
            // the stack through the proxy only.
            config.publish_all_ports = Some(false);
        })
        .start()
        .await
        .map_err(|source| DockerError::Container {
            what: "start",
            service: format!("{service} holder"),
            source: Box::new(source),
        })
}

/// The service itself, in its holder's network namespace (and so with its
/// address and hostname).
async fn start_app(
    spec: &ServiceSpec,
    suffix: &str,
    holder_id: &str,
    options: &DockerOptions,
) -> Result<ContainerAsync<GenericImage>, DockerError> {
    let service = spec.name;
    let network_mode = format!("container:{holder_id}");
    GenericImage::new(
        format!("{IMAGE_REPOSITORY}/{}", spec.image),
        options.tag.clone(),
    )
    .with_wait_for(WaitFor::message_on_stdout("listening on"))
    .with_cmd(spec.args.iter().copied())
    .with_container_name(format!("{service}-{suffix}-app"))
    .with_label(STACK_LABEL, suffix)
    .with_label("proxy-lab.service", service)
    .with_startup_timeout(options.startup_timeout)
    .with_host_config_modifier(move |config: &mut HostConfig| {
        // Joining another container's network: no ports, hosts or network of its own.
        config.network_mode = Some(network_mode.clone());
        config.publish_all_ports = Some(false);
        config.port_bindings = None;
        config.extra_hosts = None;
    })
    .start()
    .await
    .map_err(|source| DockerError::Container {
        what: "start",
        service: service.to_owned(),
        source: Box::new(source),
    })
}

/// The proxy's container request: config and CA copied in, every port
/// published on 127.0.0.1 under the same number.
fn proxy_request(
    name: &str,
    network: &str,
    config_text: &str,
    ca_dir: &Path,
    ports: &ProxyPorts,
    suffix: &str,
    options: &DockerOptions,
) -> Result<testcontainers::ContainerRequest<GenericImage>, DockerError> {
    let read = |file: &str| {
        let path = ca_dir.join(file);
        std::fs::read(&path).map_err(io_error(format!("read {}", path.display())))
    };
    let (root_cert, root_key) = (read(ROOT_CERT_FILE)?, read(ROOT_KEY_FILE)?);
    let published = ports.all();
    let mut image = GenericImage::new(format!("{IMAGE_REPOSITORY}/proxy"), options.tag.clone());
    for port in &published {
        image = image.with_exposed_port(ContainerPort::Tcp(*port));
    }
    Ok(image
        .with_wait_for(WaitFor::message_on_stdout("listening on https://"))
        .with_cmd(["--config", CONTAINER_CONFIG])
        .with_container_name(name)
        .with_network(network)
        .with_label(STACK_LABEL, suffix)
        .with_label("proxy-lab.service", "proxy")
        .with_startup_timeout(options.startup_timeout)
        .with_copy_to(CONTAINER_CONFIG, config_text.as_bytes().to_vec())
        .with_copy_to(
            CopyTargetOptions::new(format!("{CONTAINER_CA_DIR}/{ROOT_CERT_FILE}")).with_mode(0o644),
            root_cert,
        )
        .with_copy_to(
            CopyTargetOptions::new(format!("{CONTAINER_CA_DIR}/{ROOT_KEY_FILE}")).with_mode(0o600),
            root_key,
        )
        .with_host_config_modifier(move |config: &mut HostConfig| {
            // Published on loopback only, host port = container port.
            let binding = |port: u16| {
                (
                    format!("{port}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(port.to_string()),
                    }]),
                )
            };
            config.publish_all_ports = Some(false);
            config.port_bindings = Some(published.iter().copied().map(binding).collect());
        }))
}

/// The ports the proxy listens on inside its container, each published on
/// 127.0.0.1 under the same number.
struct ProxyPorts {
    plain: u16,
    tls: u16,
    /// The layer-4 listeners, in the order of [`STREAM_LISTENERS`].
    streams: Vec<(&'static str, u16)>,
}

impl ProxyPorts {
    fn all(&self) -> Vec<u16> {
        [self.plain, self.tls]
            .into_iter()
            .chain(self.streams.iter().map(|(_, port)| *port))
            .collect()
    }
}

/// The stack's proxy config (`lab/stack/proxy.toml` and its layer-4 part
/// `lab/stack/layer4.toml`) for the containers: services by container name,
/// listeners on every interface of the proxy's container, and the layer-4
/// passthrough reaching the HTTPS listener over the container's own loopback.
fn render_config(suffix: &str, ports: &ProxyPorts) -> String {
    let mut values: HashMap<&str, String> = service_specs()
        .into_iter()
        .map(|spec| (spec.name, format!("{}-{suffix}:{}", spec.name, spec.port)))
        .collect();
    values.insert("listen", format!("0.0.0.0:{}", ports.plain));
    values.insert("listen-tls", format!("0.0.0.0:{}", ports.tls));
    values.insert("https-listener", format!("127.0.0.1:{}", ports.tls));
    for (name, port) in &ports.streams {
        values.insert(name, format!("0.0.0.0:{port}"));
    }
    values.insert("admin", CONTAINER_ADMIN_ADDR.to_owned());
    values.insert("ca-dir", CONTAINER_CA_DIR.to_owned());
    render_template(
        &format!("{PROXY_CONFIG_TEMPLATE}{LAYER4_CONFIG_TEMPLATE}"),
        &values,
    )
}

/// Adds the network's gateway to `trace_from`, and makes every `"allow
/// 127.0.0.1"` access rule allow it instead: in-process the template lets
/// "clients on this machine" (127.0.0.1) ask for the decision trace or reach
/// the admin area, and in Docker those clients reach the proxy from the
/// gateway's address.
fn trust_gateway(config: &str, gateway: IpAddr) -> String {
    let mut out = String::with_capacity(config.len() + 32);
    for line in config.split_inclusive('\n') {
        match line.strip_prefix("trace_from = [") {
            Some(rest) => {
                let separator = if rest.trim_start().starts_with(']') {
                    ""
                } else {
                    ", "
                };
                out.push_str(&format!("trace_from = [\"{gateway}/32\"{separator}{rest}"));
            }
            None => {
                out.push_str(&line.replace("\"allow 127.0.0.1\"", &format!("\"allow {gateway}\"")))
            }
        }
    }
    out
}

/// `port`, or a free loopback port when it is 0.
fn pick_port(port: u16) -> Result<u16, DockerError> {
    if port != 0 {
        return Ok(port);
    }
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_error("find a free port on 127.0.0.1"))
}

fn is_port_conflict(err: &TestcontainersError) -> bool {
    let text = err.to_string();
    text.contains("port is already allocated") || text.contains("address already in use")
}

async fn remove_container(name: &str) {
    if let Ok(docker) = connect() {
        let options =
            testcontainers::bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                .force(true)
                .build();
        let _ = docker.remove_container(name, Some(options)).await;
    }
}

/// Waits until the proxy has looked up every upstream's names once (it logs
/// `servers now ... upstream=NAME`), so the first requests already go to
/// container addresses and round-robin starts from the first replica. A pool
/// of addresses only (the HTTPS listener behind the layer-4 passthrough) has
/// nothing to look up.
async fn wait_for_resolution(
    proxy: &ContainerAsync<GenericImage>,
    config: &Config,
    timeout: Duration,
) -> Result<(), DockerError> {
    let start = Instant::now();
    loop {
        let logs = proxy
            .stderr_to_vec()
            .await
            .map_err(|source| DockerError::Container {
                what: "read the logs of",
                service: "proxy".into(),
                source: Box::new(source),
            })?;
        let text = String::from_utf8_lossy(&logs);
        let unresolved: Vec<&str> = config
            .upstreams
            .iter()
            .filter(|u| {
                u.servers
                    .iter()
                    .any(|s| s.address.parse::<SocketAddr>().is_err())
            })
            .map(|u| u.name.as_str())
            .filter(|name| {
                let suffix = format!("upstream={name}");
                !text
                    .lines()
                    .any(|line| line.contains("servers now") && line.trim_end().ends_with(&suffix))
            })
            .collect();
        if unresolved.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(DockerError::NotReady {
                service: "proxy".into(),
                waited: timeout,
                reason: format!(
                    "it has not resolved the upstream(s) {}",
                    unresolved.join(", ")
                ),
                logs: tail(&text, 20),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn network_gateway(network: &str) -> Result<IpAddr, DockerError> {
    let docker = connect()?;
    let inspected = docker
        .inspect_network(network, None)
        .await
        .map_err(|source| DockerError::Api {
            what: format!("inspect network {network}"),
            source: Box::new(source),
        })?;
    inspected
        .ipam
        .and_then(|ipam| ipam.config)
        .into_iter()
        .flatten()
        .filter_map(|config| config.gateway)
        .find_map(|gateway| gateway.parse().ok())
        .ok_or_else(|| DockerError::CommandFailed {
            what: format!("inspect network {network}"),
            message: "it has no IPv4 gateway".into(),
        })
}

/// The last `n` lines of `text`, indented.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|line| format!("  | {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_has_a_distinct_name_and_the_stack_uses_only_them() {
        let names = image_names("local");
        assert_eq!(
            names,
            [
                "proxy-lab/proxy:local",
                "proxy-lab/frontend:local",
                "proxy-lab/whoami:local",
                "proxy-lab/tasks-api:local"
            ]
        );
        for spec in service_specs() {
            assert!(
                names.contains(&image_name(spec.image, "local")),
                "{}",
                spec.image
            );
        }
    }

    #[test]
    fn the_template_renders_with_container_names_and_every_layer4_listener() {
        let ports = ProxyPorts {
            plain: 18080,
            tls: 18443,
            streams: STREAM_LISTENERS.into_iter().zip(19000..).collect(),
        };
        assert_eq!(ports.all(), [18080, 18443, 19000, 19001, 19002, 19003]);
        let text = render_config("abc123", &ports);
        assert!(!text.contains("{{"), "placeholder left:\n{text}");
        assert!(
            text.contains("servers = [\"whoami-l4-abc123:5000\"]"),
            "{text}"
        );
        assert!(text.contains("servers = [\"127.0.0.1:18443\"]"), "{text}");
        let text = trust_gateway(&text, IpAddr::from([172, 18, 0, 1]));
        match Config::parse(&text, "lab/stack/proxy.toml") {
            Ok(config) => {
                assert_eq!(config.https_port(), Some(18443));
                assert!(
                    config.trace_from.contains(IpAddr::from([172, 18, 0, 1])),
                    "{text}"
                );
                let streams: Vec<String> =
                    config.streams.iter().map(|s| s.addr.to_string()).collect();
                assert_eq!(
                    streams,
                    [
                        "0.0.0.0:19000",
                        "0.0.0.0:19001",
                        "0.0.0.0:19002",
                        "0.0.0.0:19003"
                    ]
                );
            }
            Err(errors) => panic!("{errors}"),
        }
    }

    #[test]
    fn the_client_of_each_layer4_connection_is_read_from_the_access_log_in_either_format() {
        let log = concat!(
            "listening on http://0.0.0.0:8080\n",
            "172.18.0.1:40001 - - [07/Dec/2026:04:10:00 +0000] \"STREAM 0.0.0.0:9000\" upstream=172.18.0.4:5000 to_upstream=80 to_client=300 rt=0.004 end=client_closed\n",
            "172.18.0.1 - - [07/Dec/2026:04:10:00 +0000] \"GET / HTTP/1.1\" 200 12 \"-\" \"-\" rt=0.001\n",
            "172.18.0.1:40002 - - [07/Dec/2026:04:10:01 +0000] \"STREAM 0.0.0.0:9001\" upstream=172.18.0.4:5000 to_upstream=80 to_client=300 rt=0.004 end=client_closed\n",
            "{\"remote_addr\":\"172.18.0.1:40003\",\"stream\":\"0.0.0.0:9000\",\"end\":\"client_closed\"}\n",
            "{\"remote_addr\":\"172.18.0.1:40004\",\"stream\":\"0.0.0.0:9001\"}\n",
            "- - - [07/Dec/2026:04:10:02 +0000] \"STREAM 0.0.0.0:9000\" upstream=- end=limited\n",
        );
        let client = |port| SocketAddr::from(([172, 18, 0, 1], port));
        let on_9000 = stream_log_clients(log, 9000);
        assert_eq!(on_9000[..2], [Ok(client(40001)), Ok(client(40003))]);
        assert!(
            on_9000[2]
                .as_ref()
                .is_err_and(|line| line.starts_with("- - -")),
            "{on_9000:?}"
        );
        assert_eq!(
            stream_log_clients(log, 9001),
            [Ok(client(40002)), Ok(client(40004))]
        );
        assert!(stream_log_clients(log, 8080).is_empty());
    }

    #[test]
    fn only_whole_addresses_are_rewritten() {
        let rules = vec![
            ("10.0.0.7:8080".to_owned(), "127.0.0.1:8080".to_owned()),
            ("10.0.0.7".to_owned(), "127.0.0.1".to_owned()),
            ("10.0.0.1".to_owned(), "127.0.0.1".to_owned()),
        ];
        assert_eq!(
            replace_addresses(
                "from 10.0.0.1:5123 on 10.0.0.7:8080, peer 10.0.0.7:4411, upstream 10.0.0.12:5000, 110.0.0.1 é",
                &rules
            ),
            "from 127.0.0.1:5123 on 127.0.0.1:8080, peer 127.0.0.1:4411, upstream 10.0.0.12:5000, 110.0.0.1 é"
        );
    }

    #[test]
    fn the_gateway_is_added_to_trace_from_and_loopback_access_rules_and_nothing_else_changes() {
        let gateway = IpAddr::from([172, 18, 0, 1]);
        assert_eq!(
            trust_gateway(
                "# trace_from = [\"x\"]\ntrace_from = [\"127.0.0.1/32\"]\n",
                gateway
            ),
            "# trace_from = [\"x\"]\ntrace_from = [\"172.18.0.1/32\", \"127.0.0.1/32\"]\n"
        );
        assert_eq!(
            trust_gateway("trace_from = []\n", gateway),
            "trace_from = [\"172.18.0.1/32\"]\n"
        );
        assert_eq!(trust_gateway("a = 1\n", gateway), "a = 1\n");
        assert_eq!(
            trust_gateway("access = [\"allow 127.0.0.1\", \"deny all\"]\n", gateway),
            "access = [\"allow 172.18.0.1\", \"deny all\"]\n"
        );
        assert_eq!(
            trust_gateway("access = [\"allow 127.0.0.10\"]\n", gateway),
            "access = [\"allow 127.0.0.10\"]\n"
        );
    }
}
