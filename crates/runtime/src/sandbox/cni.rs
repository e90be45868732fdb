//! The CNI protocol (spec 1.0) spoken by hand: plugins are executables in the CNI bin dir, told
//! what to do through `CNI_*` environment variables and their network configuration on stdin.
//! A network configuration list runs its plugins in order for ADD, each getting the previous
//! result as `prevResult`, and in reverse order for DEL.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt as _;

use super::PortMapping;

/// The network name in our conflist; also part of the iptables chain names plugins make.
pub(crate) const NETWORK_NAME: &str = "rkube";
pub(crate) const CNI_VERSION: &str = "1.0.0";
/// The pod's interface.
pub(crate) const POD_IFNAME: &str = "eth0";

/// A plugin that should never take long; a hung one (e.g. waiting on the xtables lock forever)
/// must not hang the pod worker.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed plugin: its name and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PluginError {
    pub plugin: String,
    pub message: String,
}

/// One invocation's arguments (the `CNI_*` variables other than the command).
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    pub container_id: String,
    /// Empty when the namespace is gone (DEL then only releases what the plugins hold).
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
    pub port_mappings: Vec<PortMapping>,
}

/// A pod's CNI state, cached in its sandbox directory before ADD runs, so that DEL uses the
/// same configuration even after the conflist changes, and knows which plugins ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CniCache {
    pub container_id: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// The network configuration list used for ADD.
    pub config: Value,
    pub port_mappings: Vec<PortMapping>,
    /// How many plugins of the list ADD started (DEL runs these, in reverse).
    pub plugins_added: usize,
    /// The final ADD result, once ADD succeeded.
    pub result: Option<Value>,
}

/// The conflist this node uses: bridge with host-local IPAM on the pod CIDR, then portmap.
/// Loopback is not part of it: it is set up separately in every pod's namespace.
pub(crate) fn node_conflist(
    bridge: &str,
    mtu: u32,
    pod_cidr: &Cidr,
    ipam_data_dir: &Path,
) -> Value {
    let default_route = if pod_cidr.addr.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                // The node agent masquerades itself, sparing other nodes' pod CIDRs.
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{
                        "subnet": pod_cidr.to_string(),
                        "gateway": pod_cidr.nth(1).to_string(),
                    }]],
                    "routes": [{"dst": default_route}],
                    "dataDir": ipam_data_dir,
                },
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            },
        ],
    })
}

/// The plugins of a configuration list (or the single plugin of a plain configuration).
pub(crate) fn plugins(config: &Value) -> Vec<Map<String, Value>> {
    match config.get("plugins").and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(|p| p.as_object().cloned()).collect(),
        None => config.as_object().cloned().into_iter().collect(),
    }
}

/// What one plugin reads on stdin: its own configuration plus the list's name and version, the
/// previous result, and the runtime configuration for the capabilities it declares.
pub(crate) fn plugin_stdin(
    list: &Value,
    plugin: &Map<String, Value>,
    prev_result: Option<&Value>,
    inv: &Invocation,
) -> Value {
    let mut conf = plugin.clone();
    for key in ["name", "cniVersion"] {
        if let Some(v) = list.get(key) {
            conf.insert(key.into(), v.clone());
        }
    }
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let wants = |cap: &str| {
        plugin
            .get("capabilities")
            .and_then(|c| c.get(cap))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut runtime_config = Map::new();
    if wants("portMappings") && !inv.port_mappings.is_empty() {
        let mappings: Vec<Value> = inv
            .port_mappings
            .iter()
            .map(|m| {
                let mut v = json!({
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": m.protocol.to_lowercase(),
                });
                if let Some(ip) = m.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
                    v["hostIP"] = json!(ip);
                }
                v
            })
            .collect();
        runtime_config.insert("portMappings".into(), Value::Array(mappings));
    }
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    Value::Object(conf)
}

/// The addresses a CNI result gives (without their prefix length).
pub(crate) fn result_ips(result: &Value) -> Vec<IpAddr> {
    let Some(ips) = result.get("ips").and_then(Value::as_array) else {
        return Vec::new();
    };
    ips.iter()
        .filter_map(|ip| ip.get("address")?.as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}

/// Run ADD through every plugin of the list; `on_start(n)` is called before the `n`th plugin
/// runs (to record how far ADD got) and stops ADD by returning false. Returns the last
/// plugin's result.
pub(crate) async fn add_list(
    bin_dir: &Path,
    list: &Value,
    inv: &Invocation,
    mut on_start: impl FnMut(usize) -> bool,
) -> Result<Value, PluginError> {
    let mut prev: Option<Value> = None;
    for (i, plugin) in plugins(list).iter().enumerate() {
        let ty = plugin_type(plugin)?;
        if has_nothing_to_do(&ty, inv) {
            continue;
        }
        let binary = find_plugin(bin_dir, &ty)?;
        if !on_start(i + 1) {
            return Err(PluginError {
                plugin: ty,
                message: "ADD not started".into(),
            });
        }
        let stdin = plugin_stdin(list, plugin, prev.as_ref(), inv);
        let out = exec_plugin(&binary, &ty, "ADD", inv, bin_dir, &stdin).await?;
        let result: Value = serde_json::from_slice(&out).map_err(|e| PluginError {
            plugin: ty.clone(),
            message: format!("ADD printed a result that is not JSON: {e}"),
        })?;
        prev = Some(result);
    }
    Ok(prev.unwrap_or_else(|| json!({"cniVersion": CNI_VERSION})))
}

/// Run DEL through the first `count` plugins of the list, last first, each given the cached
/// ADD result. Every plugin runs even if an earlier one fails; the first error is returned.
pub(crate) async fn del_list(
    bin_dir: &Path,
    list: &Value,
    count: usize,
    cached_result: Option<&Value>,
    inv: &Invocation,
) -> Result<(), PluginError> {
    let mut first_error = None;
    for plugin in plugins(list).iter().take(count).rev() {
        let outcome = async {
            let ty = plugin_type(plugin)?;
            if has_nothing_to_do(&ty, inv) {
                return Ok(Vec::new());
            }
            let binary = find_plugin(bin_dir, &ty)?;
            let stdin = plugin_stdin(list, plugin, cached_result, inv);
            exec_plugin(&binary, &ty, "DEL", inv, bin_dir, &stdin).await
        }
        .await;
        if let Err(e) = outcome {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// portmap without port mappings passes its input through and touches nothing: not running
/// it saves a process per pod (most pods have no hostPort).
fn has_nothing_to_do(ty: &str, inv: &Invocation) -> bool {
    ty == "portmap" && inv.port_mappings.is_empty()
}

fn plugin_type(plugin: &Map<String, Value>) -> Result<String, PluginError> {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .map(str::to_owned)
        .ok_or_else(|| PluginError {
            plugin: "<unknown>".into(),
            message: "a plugin configuration has no valid \"type\"".into(),
        })
}

fn find_plugin(bin_dir: &Path, ty: &str) -> Result<PathBuf, PluginError> {
    let path = bin_dir.join(ty);
    if path.is_file() {
        Ok(path)
    } else {
        Err(PluginError {
            plugin: ty.into(),
            message: format!("no plugin binary {}", path.display()),
        })
    }
}

/// `CNI_ARGS`: `IgnoreUnknown=1` first so plugins accept the Kubernetes keys they don't know.
fn cni_args(args: &[(String, String)]) -> String {
    std::iter::once("IgnoreUnknown=1".to_owned())
        .chain(args.iter().map(|(k, v)| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(";")
}

async fn exec_plugin(
    binary: &Path,
    ty: &str,
    command: &str,
    inv: &Invocation,
    bin_dir: &Path,
    stdin: &Value,
) -> Result<Vec<u8>, PluginError> {
    let fail = |message: String| PluginError {
        plugin: ty.into(),
        message,
    };
    let mut cmd = tokio::process::Command::new(binary);
    // Plugins run iptables and friends: make sure the sbin dirs are on their PATH.
    let path = std::env::var("PATH").unwrap_or_default();
    let path = if path.split(':').any(|p| p == "/usr/sbin") {
        path
    } else {
        format!("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{path}")
    };
    cmd.env("PATH", path)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &inv.container_id)
        .env("CNI_NETNS", &inv.netns)
        .env("CNI_IFNAME", &inv.ifname)
        .env("CNI_ARGS", cni_args(&inv.args))
        .env("CNI_PATH", bin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("starting {}: {e}", binary.display())))?;
    let input = serde_json::to_vec(stdin).expect("a JSON value serializes");
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin may exit without reading stdin (e.g. on a bad environment): its exit status
        // tells what went wrong, not the broken pipe.
        let _ = pipe.write_all(&input).await;
    }
    let output = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            fail(format!(
                "{command} did not finish within {PLUGIN_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| fail(format!("waiting for {command}: {e}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(fail(plugin_error_message(command, &output)))
}

/// A failed plugin prints a CNI error object (`code`, `msg`, `details`) on stdout; older or
/// crashing plugins may only write to stderr.
fn plugin_error_message(command: &str, output: &std::process::Output) -> String {
    #[derive(Deserialize)]
    struct CniErrorObject {
        #[serde(default)]
        code: u32,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    if let Ok(err) = serde_json::from_slice::<CniErrorObject>(&output.stdout)
        && !err.msg.is_empty()
    {
        let mut message = format!("{command} failed: {}", err.msg);
        if !err.details.is_empty() {
            message.push_str(&format!(" ({})", err.details));
        }
        if err.code != 0 {
            message.push_str(&format!(" [code {}]", err.code));
        }
        return message;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    if stderr.is_empty() {
        format!("{command} failed: {}", output.status)
    } else {
        format!("{command} failed: {stderr}")
    }
}

/// The chain the bridge plugin's ipMasq makes for a container (`CNI-` and the start of the hex
/// SHA-512 of network name and container ID, 28 characters in all).
pub(crate) fn masquerade_chain(network: &str, container_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha512::digest(format!("{network}{container_id}").as_bytes());
    let mut chain = format!("CNI-{}", hex::encode(digest));
    chain.truncate(28);
    chain
}

/// Remove a container's masquerade chain and the POSTROUTING jumps to it, if they are still
/// there. The bridge plugin only removes them when it finds the pod's interface; when the
/// network namespace is already gone, this does it instead.
pub(crate) async fn remove_masquerade(tool: &str, chain: &str) -> Result<(), PluginError> {
    let fail = |message: String| PluginError {
        plugin: "bridge".into(),
        message: format!("removing masquerade chain {chain}: {message}"),
    };
    let exists = run(tool, &["-w", "-t", "nat", "-n", "-L", chain]).await;
    if exists.is_err() {
        return Ok(());
    }
    let listing = run(
        tool,
        &[
            "-w",
            "-t",
            "nat",
            "-n",
            "--line-numbers",
            "-L",
            "POSTROUTING",
        ],
    )
    .await
    .map_err(fail)?;
    for number in jump_rule_numbers(&listing, chain).into_iter().rev() {
        run(
            tool,
            &["-w", "-t", "nat", "-D", "POSTROUTING", &number.to_string()],
        )
        .await
        .map_err(fail)?;
    }
    run(tool, &["-w", "-t", "nat", "-F", chain])
        .await
        .map_err(fail)?;
    run(tool, &["-w", "-t", "nat", "-X", chain])
        .await
        .map_err(fail)?;
    Ok(())
}

/// Rule numbers (ascending) of a `--line-numbers -L` listing whose target is `chain`.
pub(crate) fn jump_rule_numbers(listing: &str, chain: &str) -> Vec<u32> {
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let number = fields.next()?.parse().ok()?;
            (fields.next()? == chain).then_some(number)
        })
        .collect()
}

async fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running {program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// An IP network in CIDR notation, e.g. `10.42.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = s.trim().split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return None;
        }
        let host_bits = u32::from(bits - prefix);
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Some(Cidr { addr, prefix })
    }

    /// The `n`th address of the network (1 = the gateway).
    pub fn nth(&self, n: u32) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_add(n).into()),
            IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_add(u128::from(n)).into()),
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(port_mappings: Vec<PortMapping>) -> Invocation {
        Invocation {
            container_id: "uid-1".into(),
            netns: "/x/net".into(),
            ifname: POD_IFNAME.into(),
            args: vec![("K8S_POD_NAME".into(), "web".into())],
            port_mappings,
        }
    }

    #[test]
    fn cidrs_parse_and_normalize() {
        let c = Cidr::parse("10.42.3.7/24").unwrap();
        assert_eq!(c.to_string(), "10.42.3.0/24");
        assert_eq!(c.nth(1).to_string(), "10.42.3.1");
        let v6 = Cidr::parse("fd00:10:244:1::/64").unwrap();
        assert_eq!(v6.nth(1).to_string(), "fd00:10:244:1::1");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/-1", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn conflist_has_bridge_with_host_local_then_portmap() {
        let cidr = Cidr::parse("10.42.1.0/24").unwrap();
        let list = node_conflist("cni0", 1450, &cidr, Path::new("/d/.ipam"));
        let plugins = plugins(&list);
        assert_eq!(plugins.len(), 2);
        assert_eq!(plugins[0]["type"], "bridge");
        assert_eq!(plugins[0]["bridge"], "cni0");
        assert_eq!(plugins[0]["mtu"], 1450);
        assert_eq!(plugins[0]["isGateway"], true);
        let range = &plugins[0]["ipam"]["ranges"][0][0];
        assert_eq!(range["subnet"], "10.42.1.0/24");
        assert_eq!(range["gateway"], "10.42.1.1");
        assert_eq!(plugins[0]["ipam"]["dataDir"], "/d/.ipam");
        assert_eq!(plugins[1]["type"], "portmap");
        assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn stdin_carries_name_version_prev_result_and_capabilities() {
        let cidr = Cidr::parse("10.42.1.0/24").unwrap();
        let list = node_conflist("cni0", 1500, &cidr, Path::new("/d"));
        let plugins = plugins(&list);
        let mapping = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "TCP".into(),
            host_ip: None,
        };
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.42.1.2/24"}]});
        let bridge = plugin_stdin(&list, &plugins[0], None, &inv(vec![mapping.clone()]));
        assert_eq!(bridge["name"], NETWORK_NAME);
        assert_eq!(bridge["cniVersion"], CNI_VERSION);
        assert!(bridge.get("prevResult").is_none());
        // The bridge does not declare the portMappings capability: it gets none.
        assert!(bridge.get("runtimeConfig").is_none());
        let portmap = plugin_stdin(&list, &plugins[1], Some(&prev), &inv(vec![mapping]));
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
        );
        let none = plugin_stdin(&list, &plugins[1], Some(&prev), &inv(Vec::new()));
        assert!(none.get("runtimeConfig").is_none());
    }

    #[test]
    fn result_ips_drop_the_prefix() {
        let result = json!({"ips": [
            {"address": "10.42.1.5/24", "gateway": "10.42.1.1", "interface": 2},
            {"address": "fd00::5/64"},
            {"address": "garbage"},
        ]});
        let ips: Vec<String> = result_ips(&result)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, ["10.42.1.5", "fd00::5"]);
        assert!(result_ips(&json!({})).is_empty());
    }

    #[test]
    fn cni_args_ignore_unknown_keys() {
        assert_eq!(
            cni_args(&[("K8S_POD_NAMESPACE".into(), "default".into())]),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default"
        );
    }

    #[test]
    fn masquerade_chain_names_are_short_and_stable() {
        let chain = masquerade_chain("rkube", "abc");
        assert_eq!(chain.len(), 28);
        assert!(chain.starts_with("CNI-"));
        assert_eq!(chain, masquerade_chain("rkube", "abc"));
        assert_ne!(chain, masquerade_chain("rkube", "abd"));
    }

    #[test]
    fn jump_rules_are_found_by_target() {
        let listing = "Chain POSTROUTING (policy ACCEPT)\n\
            num  target     prot opt source               destination\n\
            1    CNI-aaaa   all  --  10.42.1.2            0.0.0.0/0   /* x */\n\
            2    MASQUERADE all  --  0.0.0.0/0            0.0.0.0/0\n\
            3    CNI-aaaa   all  --  10.42.1.3            0.0.0.0/0\n";
        assert_eq!(jump_rule_numbers(listing, "CNI-aaaa"), [1, 3]);
        assert!(jump_rule_numbers(listing, "CNI-bbbb").is_empty());
    }

    #[test]
    fn plugin_errors_use_the_cni_error_object() {
        use std::os::unix::process::ExitStatusExt as _;
        let output = std::process::Output {
            status: std::process::ExitStatus::from_raw(1 << 8),
            stdout: br#"{"code":11,"msg":"failed to allocate","details":"range full"}"#.to_vec(),
            stderr: Vec::new(),
        };
        assert_eq!(
            plugin_error_message("ADD", &output),
            "ADD failed: failed to allocate (range full) [code 11]"
        );
        let output = std::process::Output {
            stdout: Vec::new(),
            stderr: b"panic: boom\n".to_vec(),
            ..output
        };
        assert_eq!(
            plugin_error_message("DEL", &output),
            "DEL failed: panic: boom"
        );
    }
}
