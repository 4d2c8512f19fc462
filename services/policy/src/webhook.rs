//! Webhook destinations. A tenant administrator chooses the URL and the
//! alerting service posts to it from inside the operator's network, so a
//! URL must not reach that network: private, loopback, link-local and other
//! non-public addresses are refused (checked when the webhook is created
//! and again, after resolving, before every delivery), unless the operator
//! allows them (`webhook_allow_private`, for a local setup or tests).

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

/// Resolves the URL's host and checks every address it resolves to.
pub async fn check_destination(url: &url::Url, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let host = url.host_str().ok_or("has no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?;
    let mut any = false;
    for a in addrs {
        check_ip(a.ip(), false)?;
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(format!("{host} resolves to no address"))
    }
}

fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(format!("{ip} is not a public address"))
    }
}

/// True for addresses on the public internet.
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
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
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
        assert!(check_url("https://8.8.8.8/x", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok());
    }
}
