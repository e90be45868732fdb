//! The files the kubelet writes for every pod and mounts into its containers: `/etc/hosts`,
//! `/etc/resolv.conf` (from `dnsPolicy` and `dnsConfig`, as upstream's `dns.Configurer`) and
//! `/etc/hostname`.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// Upstream's limits on the search list of a pod's resolv.conf.
const MAX_DNS_SEARCH_PATHS: usize = 32;

/// A parsed (or to be written) resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parse a host's resolv.conf (`nameserver`, `search`/`domain`, `options` lines).
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => conf.nameservers.extend(fields.next().map(String::from)),
                // The last search or domain line wins, as the resolver reads it.
                Some("search") | Some("domain") => {
                    conf.searches = fields.map(String::from).collect();
                }
                Some("options") => conf.options.extend(fields.map(String::from)),
                _ => {}
            }
        }
        conf
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// What the kubelet knows for the DNS of its pods.
#[derive(Debug, Clone)]
pub struct DnsSettings<'a> {
    pub cluster_dns: &'a [IpAddr],
    pub cluster_domain: &'a str,
    /// The host's resolv.conf (for `Default`, and the host's search domains).
    pub host: &'a ResolvConf,
}

/// Whether the ClusterFirst policy had to fall back to the host's configuration because no
/// cluster DNS is configured (the kubelet then records a MissingClusterDNS event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDns {
    pub conf: ResolvConf,
    pub missing_cluster_dns: bool,
}

/// The resolv.conf of a pod, as upstream's `GetPodDNS` computes it.
pub fn pod_resolv_conf(pod: &Pod, settings: &DnsSettings) -> PodDns {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    // ClusterFirst with hostNetwork means Default; ClusterFirstWithHostNet means ClusterFirst.
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut missing_cluster_dns = false;
    let mut conf = if policy == "None" {
        ResolvConf::default()
    } else if cluster_first && !settings.cluster_dns.is_empty() {
        let domain = settings.cluster_domain;
        let mut searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_string(),
        ];
        searches.extend(settings.host.searches.iter().cloned());
        ResolvConf {
            nameservers: settings.cluster_dns.iter().map(IpAddr::to_string).collect(),
            searches,
            options: vec!["ndots:5".to_string()],
        }
    } else {
        missing_cluster_dns = cluster_first;
        settings.host.clone()
    };
    if let Some(config) = &spec.dns_config {
        for ns in config.nameservers.iter().flatten() {
            if !conf.nameservers.contains(ns) {
                conf.nameservers.push(ns.clone());
            }
        }
        for search in config.searches.iter().flatten() {
            if !conf.searches.contains(search) {
                conf.searches.push(search.clone());
            }
        }
        for option in config.options.iter().flatten() {
            let Some(option_name) = option.name.clone() else {
                continue;
            };
            let rendered = match &option.value {
                Some(v) => format!("{option_name}:{v}"),
                None => option_name.clone(),
            };
            let name = |o: &String| o.split(':').next().unwrap_or("").to_string();
            if let Some(existing) = conf.options.iter_mut().find(|o| name(o) == option_name) {
                *existing = rendered;
            } else {
                conf.options.push(rendered);
            }
        }
    }
    dedup(&mut conf.searches);
    conf.searches.truncate(MAX_DNS_SEARCH_PATHS);
    PodDns {
        conf,
        missing_cluster_dns,
    }
}

fn dedup(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|s| seen.insert(s.clone()));
}

/// The pod's hostname (`spec.hostname`, else its name cut to 63 characters) and, with a
/// subdomain, its fully qualified name.
pub fn pod_hostname(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            let cut: String = name.chars().take(63).collect();
            cut.trim_end_matches(['-', '.']).to_string()
        });
    let fqdn = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
        .map(|sub| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            format!("{hostname}.{sub}.{ns}.svc.{cluster_domain}")
        });
    (hostname, fqdn)
}

/// `/etc/hosts` for a pod with its own network: localhost lines, one line per pod IP with
/// the pod's names, then `hostAliases`.
pub fn managed_hosts(pod: &Pod, pod_ips: &[IpAddr], cluster_domain: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let (hostname, fqdn) = pod_hostname(pod, cluster_domain);
    for ip in pod_ips {
        match &fqdn {
            Some(fqdn) => out.push_str(&format!("{ip}\t{fqdn}\t{hostname}\n")),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    out.push_str(&host_aliases(pod));
    out
}

/// `/etc/hosts` for a hostNetwork pod: the host's file, plus `hostAliases`.
pub fn host_network_hosts(pod: &Pod, host_hosts: &str) -> String {
    let mut out = String::from("# Kubernetes-managed hosts file (host network).\n");
    out.push_str(host_hosts);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&host_aliases(pod));
    out
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_ref())
        .filter(|a| !a.is_empty());
    let Some(aliases) = aliases else {
        return String::new();
    };
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.clone().unwrap_or_default();
        out.push_str(&format!("{}\t{}\n", alias.ip, names.join("\t")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostAlias, PodDNSConfig, PodDNSConfigOption, PodSpec};

    fn pod(spec: PodSpec) -> Pod {
        let mut pod = Pod {
            spec: Some(spec),
            ..Default::default()
        };
        pod.metadata.name = Some("web-0".into());
        pod.metadata.namespace = Some("shop".into());
        pod
    }

    fn host() -> ResolvConf {
        ResolvConf::parse("# generated\nnameserver 10.0.0.2\nsearch corp.example\noptions edns0\n")
    }

    #[test]
    fn cluster_first_uses_cluster_dns_and_search_path() {
        let dns = ["10.43.0.10".parse().unwrap()];
        let host = host();
        let settings = DnsSettings {
            cluster_dns: &dns,
            cluster_domain: "cluster.local",
            host: &host,
        };
        let got = pod_resolv_conf(&pod(PodSpec::default()), &settings);
        assert!(!got.missing_cluster_dns);
        assert_eq!(
            got.conf.render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.43.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_to_the_host() {
        let host = host();
        let settings = DnsSettings {
            cluster_dns: &[],
            cluster_domain: "cluster.local",
            host: &host,
        };
        let got = pod_resolv_conf(&pod(PodSpec::default()), &settings);
        assert!(got.missing_cluster_dns);
        assert_eq!(got.conf, host);
    }

    #[test]
    fn host_network_policies() {
        let dns = ["10.43.0.10".parse().unwrap()];
        let host = host();
        let settings = DnsSettings {
            cluster_dns: &dns,
            cluster_domain: "cluster.local",
            host: &host,
        };
        let plain = pod(PodSpec {
            host_network: Some(true),
            ..Default::default()
        });
        assert_eq!(pod_resolv_conf(&plain, &settings).conf, host);
        let with_hostnet = pod(PodSpec {
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".into()),
            ..Default::default()
        });
        assert_eq!(
            pod_resolv_conf(&with_hostnet, &settings).conf.nameservers,
            vec!["10.43.0.10"]
        );
    }

    #[test]
    fn none_policy_takes_dns_config_only_and_options_override() {
        let host = host();
        let settings = DnsSettings {
            cluster_dns: &[],
            cluster_domain: "cluster.local",
            host: &host,
        };
        let p = pod(PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig {
                nameservers: Some(vec!["1.2.3.4".into()]),
                searches: Some(vec!["a.example".into(), "a.example".into()]),
                options: Some(vec![
                    PodDNSConfigOption {
                        name: Some("ndots".into()),
                        value: Some("2".into()),
                    },
                    PodDNSConfigOption {
                        name: Some("rotate".into()),
                        value: None,
                    },
                ]),
            }),
            ..Default::default()
        });
        let got = pod_resolv_conf(&p, &settings).conf;
        assert_eq!(
            got.render(),
            "search a.example\nnameserver 1.2.3.4\noptions ndots:2 rotate\n"
        );
        let mut q = p.clone();
        q.spec.as_mut().unwrap().dns_policy = Some("Default".into());
        let got = pod_resolv_conf(&q, &settings).conf;
        assert_eq!(got.nameservers, vec!["10.0.0.2", "1.2.3.4"]);
        assert_eq!(got.options, vec!["edns0", "ndots:2", "rotate"]);
    }

    #[test]
    fn hosts_file_names_the_pod_and_its_aliases() {
        let mut p = pod(PodSpec {
            host_aliases: Some(vec![HostAlias {
                ip: "10.1.2.3".into(),
                hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
            }]),
            ..Default::default()
        });
        let ips = ["10.42.0.7".parse().unwrap()];
        let text = managed_hosts(&p, &ips, "cluster.local");
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.contains("\n10.42.0.7\tweb-0\n"), "{text}");
        assert!(
            text.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n")
        );
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("db".into());
        spec.subdomain = Some("backend".into());
        let text = managed_hosts(&p, &ips, "cluster.local");
        assert!(
            text.contains("\n10.42.0.7\tdb.backend.shop.svc.cluster.local\tdb\n"),
            "{text}"
        );
        let text = host_network_hosts(&p, "127.0.0.1 localhost");
        assert!(
            text.starts_with(
                "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
            )
        );
    }

    #[test]
    fn long_pod_names_are_cut_for_the_hostname() {
        let mut p = pod(PodSpec::default());
        let long = format!("{}-x", "a".repeat(62));
        p.metadata.name = Some(long);
        let (hostname, fqdn) = pod_hostname(&p, "cluster.local");
        assert_eq!(hostname, "a".repeat(62));
        assert_eq!(fqdn, None);
    }
}
