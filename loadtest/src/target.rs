//! Which deployment the load goes to. Only an address the user gave, plain `http://host:port`,
//! and only on this machine's loopback unless `--allow-remote` says otherwise: a load test must
//! never hit someone else's system by a typo.

use std::net::IpAddr;

/// A base URL without a trailing slash, checked.
pub fn check(url: &str, allow_remote: bool) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("target `{url}` is not a URL: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("target `{url}`: only http:// is supported (this build has no TLS)"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("target `{url}` must not carry credentials"));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(format!("target `{url}` must be a bare http://host:port"));
    }
    let host = parsed.host_str().ok_or_else(|| format!("target `{url}` names no host"))?;
    let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    if !loopback && !allow_remote {
        return Err(format!(
            "target `{url}` is not on this machine's loopback (127.0.0.0/8, ::1, localhost); \
             pass --allow-remote only if you own that deployment and mean to load it"
        ));
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
    Ok(format!("http://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_allowed() {
        assert_eq!(check("http://127.0.0.1:8080", false), Ok("http://127.0.0.1:8080".into()));
        assert_eq!(check("http://127.1.2.3:9/", false), Ok("http://127.1.2.3:9".into()));
        assert_eq!(check("http://localhost:8080", false), Ok("http://localhost:8080".into()));
        assert_eq!(check("http://[::1]:8080", false), Ok("http://[::1]:8080".into()));
        for remote in ["http://10.0.0.5:8080", "http://example.jp", "http://192.168.1.1:80", "http://127.0.0.1.example.jp:80"] {
            let err = check(remote, false).expect_err(remote);
            assert!(err.contains("--allow-remote"), "{err}");
        }
        assert_eq!(check("http://10.0.0.5:8080", true), Ok("http://10.0.0.5:8080".into()));
        assert!(check("https://127.0.0.1:8443", false).expect_err("tls").contains("only http://"));
        assert!(check("http://127.0.0.1:8080/api", false).is_err());
        assert!(check("http://u:p@127.0.0.1:8080", false).is_err());
        assert!(check("not a url", false).is_err());
    }
}
