//! Webhook destinations. A tenant administrator chooses the URL and the
//! alerting service posts to it from inside the operator's network, so a
//! URL must not reach that network: private, loopback, link-local and other
//! non-public addresses are refused (checked when the webhook is created,
//! and by the resolver the delivering HTTP client connects through, which
//! resolves once and hands over only vetted addresses), unless the
//! operator allows them (`webhook_allow_private`, for a local setup or
//! tests).

use std::net::IpAddr;

/// Checks a URL's form: absolute https (http only with private
/// destinations allowed), a host, no credentials, at most 2000 bytes.
/// Returns it normalised.
pub fn check_url(url: &str, allow_private: bool) -> Result<url::Url, String> {
    if url.len() > 2000 {
        return Err("is longer than 2000 characters".into());
    }
    let parsed = url::Url::parse(url.trim()).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return Err("must use https".into()),
        other => return Err(format!("scheme {other:?} is not https")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".into());
    }
    match parsed.host() {
        None => return Err("has no host".into()),
        Some(url::Host::Ipv4(a)) => check_ip(IpAddr::V4(a), allow_private)?,
        Some(url::Host::Ipv6(a)) => check_ip(IpAddr::V6(a), allow_private)?,
        Some(url::Host::Domain(d)) => {
            if !allow_private && (d == "localhost" || d.ends_with(".localhost")) {
                return Err(format!("{d} is not a public host"));
            }
        }
    }
    Ok(parsed)
}

/// Resolves webhook hosts once and vets every address: the only way the
/// services turn a webhook's name into addresses. The alerting service's
/// HTTP client connects only to the addresses this returned (it is the
/// client's resolver), so a name cannot answer a public address to a check
/// and a private one to the connection (DNS rebinding). A name with any
/// non-public address is refused whole, unless private destinations are
/// allowed.
#[derive(Clone)]
pub struct Resolver {
    allow_private: bool,
    dns: Dns,
}

#[derive(Clone)]
enum Dns {
    /// The operating system's resolver (`getaddrinfo`: hosts file, resolv.conf).
    System,
    /// One DNS server, asked over UDP with no cache: each resolution is a
    /// fresh question (`webhook_dns_server`; the tests' own responder).
    Server(std::sync::Arc<hickory_resolver::TokioResolver>),
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("allow_private", &self.allow_private)
            .field(
                "dns",
                &match self.dns {
                    Dns::System => "system",
                    Dns::Server(_) => "server",
                },
            )
            .finish()
    }
}

impl Resolver {
    /// `dns_server` empty: the system's resolver; else `ip:port` of a DNS
    /// server to ask. The error names the setting.
    pub fn new(allow_private: bool, dns_server: &str) -> Result<Self, String> {
        let dns = if dns_server.is_empty() {
            Dns::System
        } else {
            use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
            let addr: std::net::SocketAddr = dns_server.parse().map_err(|_| {
                format!("webhook_dns_server {dns_server:?} is not an address like 127.0.0.1:53")
            })?;
            let mut config = ResolverConfig::new();
            config.add_name_server(NameServerConfig::new(
                addr,
                hickory_resolver::proto::xfer::Protocol::Udp,
            ));
            let mut opts = ResolverOpts::default();
            opts.cache_size = 0;
            opts.timeout = std::time::Duration::from_secs(3);
            opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
            let resolver = hickory_resolver::Resolver::builder_with_config(
                config,
                hickory_resolver::name_server::TokioConnectionProvider::default(),
            )
            .with_options(opts)
            .build();
            Dns::Server(std::sync::Arc::new(resolver))
        };
        Ok(Self { allow_private, dns })
    }

    /// The addresses of `host`, every one of them vetted; an error names
    /// the first that is not allowed.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let host = host.trim_matches(['[', ']']);
        if let Ok(ip) = host.parse::<IpAddr>() {
            check_ip(ip, self.allow_private)?;
            return Ok(vec![ip]);
        }
        let addrs: Vec<IpAddr> = match &self.dns {
            Dns::System => tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| format!("{host} does not resolve: {e}"))?
                .map(|a| a.ip())
                .collect(),
            Dns::Server(r) => r
                .lookup_ip(host)
                .await
                .map_err(|e| format!("{host} does not resolve: {e}"))?
                .iter()
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("{host} resolves to no address"));
        }
        for a in &addrs {
            check_ip(*a, self.allow_private).map_err(|e| format!("{host}: {e}"))?;
        }
        Ok(addrs)
    }

    /// Checks where `url` leads: its form and, resolved, every address.
    pub async fn check_destination(&self, url: &url::Url) -> Result<(), String> {
        let host = url.host_str().ok_or("has no host")?;
        self.resolve(host).await.map(drop)
    }
}

fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(format!("{ip} is not a public address"))
    }
}

/// True for addresses on the public internet. IPv6 must be global unicast
/// (2000::/3), and not one of the ranges inside it that embed or reach an
/// IPv4 address another way (6to4, Teredo, NAT64's are outside it anyway)
/// or are reserved (documentation, ORCHID, benchmarking).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = a.segments();
            let global_unicast = (s[0] & 0xe000) == 0x2000;
            global_unicast
                && !(s[0] == 0x2002 // 6to4
                    || (s[0] == 0x2001 && s[1] == 0x0000) // Teredo
                    || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                    || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID
                    || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0020) // ORCHIDv2
                    || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking
                    || (s[0] & 0xfff0) == 0x3ff0) // documentation (3fff::/20)
        }
    }
}

/// The webhook client's resolver: each connection's addresses are the ones
/// [`Resolver`] resolved and vetted, once.
#[derive(Debug)]
pub struct VettedDns(pub Resolver);

impl reqwest::dns::Resolve for VettedDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            let addrs = resolver
                .resolve(name.as_str())
                .await
                .map_err(|e| format!("webhook destination refused: {e}"))?;
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| std::net::SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The HTTP client webhooks are posted with: hosts resolved, vetted and
/// connected to in one step (only the addresses the resolver let
/// through), no redirects, no proxy.
pub fn client(
    resolver: Resolver,
    timeout: std::time::Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(std::sync::Arc::new(VettedDns(resolver)))
        .build()
}

/// Hex HMAC-SHA256 of `timestamp.body` under `secret`: what
/// `X-Mamori-Signature: sha256=…` carries. Receivers recompute it and
/// compare, and refuse old timestamps to stop replays.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Posts `body` to `url`, signed with `secret`; the receiver's status.
pub async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    secret: &[u8],
    delivery: uuid::Uuid,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::StatusCode> {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = sign(secret, &timestamp, &body);
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-mamori-delivery", delivery.to_string())
        .header("x-mamori-timestamp", &timestamp)
        .header("x-mamori-signature", format!("sha256={signature}"))
        .body(body)
        .send()
        .await?;
    Ok(resp.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_destinations_are_refused() {
        for bad in [
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://172.16.0.1/x",
            "https://192.168.1.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://localhost/x",
            "https://user:pw@hooks.example.com/x",
            "ftp://hooks.example.com/x",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("https://hooks.slack.com/services/T/B/X", false).is_ok());
        // IPv6 that reaches an IPv4 or local network another way.
        for bad in [
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "::a00:1",
            "fec0::1",
            "fe80::1",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "3fff::1",
            "ff02::1",
            "::",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad}");
        }
        assert!(is_public("2606:4700::1111".parse().unwrap()));
        assert!(is_public("2a00:1450:4001::200e".parse().unwrap()));
        assert!(check_url("https://8.8.8.8/x", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok());
    }
}
