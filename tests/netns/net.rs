//! Worker "hosts" in network namespaces of their own, each joined to the root namespace by a
//! veth pair of its own: the root end is the host's link as the rest of the network sees it
//! (the port of a switch), the other end is the host's network card.
//!
//! Every name carries the test's pid, so that runs at once never meet, and a [`Network`]
//! removes its namespaces and links when it is dropped, on a panic too. A run killed outright
//! leaves them behind: the next run removes those whose pid is gone ([`remove_stale`]).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

/// The prefix of every namespace this test makes: `abathur-netns-<pid>-<host>`.
const PREFIX: &str = "abathur-netns-";

/// Why this machine cannot run the test, if it cannot: not root, or `ip` or `tc` missing.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("network namespaces need root, and this test does not run as root".into());
    }
    for tool in ["ip", "tc"] {
        if !on_path(tool) {
            return Some(format!(
                "`{tool}` (iproute2) is not on PATH; it makes the namespaces and links"
            ));
        }
    }
    // Root in a container may still lack the right to make namespaces.
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("cannot make a network namespace: {e}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// One host: a namespace and its link.
#[derive(Debug)]
pub struct Host {
    /// `a`, `b`, ...
    pub label: String,
    /// The namespace's name.
    pub netns: String,
    /// The link's end in the root namespace: taking it down cuts the host off.
    pub veth_root: String,
    /// The link's end inside the namespace: the host's network card.
    pub veth_host: String,
    /// The root end's address: where the host reaches the database.
    pub root_addr: Ipv4Addr,
    /// The host's own address.
    pub host_addr: Ipv4Addr,
}

impl Host {
    /// `program` and its arguments, run inside the host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).arg(program);
        command
    }

    /// Takes the host's link down at its far end, as a cable pulled out of the switch: the host
    /// sees no carrier, and whatever it sends is lost (connections hang, as in a real
    /// partition) rather than refused at once.
    pub fn cut(&self) -> Result<(), String> {
        ip(&["link", "set", &self.veth_root, "down"])
    }

    /// Brings the link back.
    pub fn mend(&self) -> Result<(), String> {
        ip(&["link", "set", &self.veth_root, "up"])
    }

    /// Adds `ms` of latency to everything the host sends, with `tc netem`. `Ok(false)` when the
    /// kernel has no netem (`Specified qdisc kind is unknown`), so that the caller can add the
    /// latency another way.
    pub fn add_latency(&self, ms: u32) -> Result<bool, String> {
        let delay = format!("{ms}ms");
        let output = self
            .command("tc")
            .args([
                "qdisc",
                "add",
                "dev",
                &self.veth_host,
                "root",
                "netem",
                "delay",
                &delay,
            ])
            .output()
            .map_err(|e| format!("run tc: {e}"))?;
        if output.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("qdisc kind is unknown") {
            return Ok(false);
        }
        Err(format!(
            "tc qdisc add ... netem delay {delay}: {}",
            stderr.trim()
        ))
    }
}

/// The hosts of one run; dropping it removes them.
#[derive(Debug)]
pub struct Network {
    pub hosts: Vec<Host>,
}

impl Network {
    /// Makes one host per label, each with its own namespace and link, addressed from
    /// 10.199.0.0/16 by the test's pid (a /30 per host).
    ///
    /// # Errors
    /// What `ip` said when a namespace or link cannot be made; whatever was made is removed.
    pub fn new(labels: &[&str]) -> Result<Self, String> {
        remove_stale();
        let pid = std::process::id();
        let mut network = Self { hosts: Vec::new() };
        for (i, label) in labels.iter().enumerate() {
            // 16,384 blocks of 4 addresses: .1 the root end, .2 the host.
            let block = ((pid % 8192) * 2 + i as u32) % 16384;
            let base = u32::from(Ipv4Addr::new(10, 199, 0, 0)) + block * 4;
            let host = Host {
                label: (*label).to_string(),
                netns: format!("{PREFIX}{pid}-{label}"),
                // Interface names are at most 15 bytes: "abn" + 7 digits + label + "r".
                veth_root: format!("abn{pid}{label}r"),
                veth_host: format!("abn{pid}{label}h"),
                root_addr: Ipv4Addr::from(base + 1),
                host_addr: Ipv4Addr::from(base + 2),
            };
            ip(&["netns", "add", &host.netns])?;
            // Owned from here: a failure below still removes the namespace.
            network.hosts.push(host);
            let host = network.hosts.last().expect("just pushed");
            let root_cidr = format!("{}/30", host.root_addr);
            let host_cidr = format!("{}/30", host.host_addr);
            ip(&[
                "link",
                "add",
                &host.veth_root,
                "type",
                "veth",
                "peer",
                "name",
                &host.veth_host,
                "netns",
                &host.netns,
            ])?;
            ip(&["addr", "add", &root_cidr, "dev", &host.veth_root])?;
            ip(&["link", "set", &host.veth_root, "up"])?;
            ip(&[
                "-n",
                &host.netns,
                "addr",
                "add",
                &host_cidr,
                "dev",
                &host.veth_host,
            ])?;
            ip(&["-n", &host.netns, "link", "set", &host.veth_host, "up"])?;
            ip(&["-n", &host.netns, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// The host labelled `label`.
    pub fn host(&self, label: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.label == label)
            .unwrap_or_else(|| panic!("no host {label}"))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in &self.hosts {
            // Deleting either end of a veth pair deletes both; the root end goes at once,
            // where deleting the namespace would leave the kernel to remove it later.
            let _ = ip(&["link", "del", &host.veth_root]);
            if let Err(e) = ip(&["netns", "del", &host.netns]) {
                eprintln!("could not remove network namespace {}: {e}", host.netns);
            }
        }
    }
}

/// Removes the namespaces (and so their links) of earlier runs whose process is gone: a run
/// killed outright (SIGKILL) had no chance to.
pub fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, label)) = rest.split_once('-') else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = ip(&["link", "del", &format!("abn{pid}{label}r")]);
        let _ = ip(&["netns", "del", name]);
    }
}

/// Runs `ip ARGS`; the error is its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("run ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
