//! Server addresses as connectors take them: `scheme://[user@]host[:port][/path]`
//! URLs and `host:port` pairs. Checked for form only; whether a server
//! answers is the engine's business.

/// A server address parsed from `scheme://[user@]host[:port][/path]`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Url {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Parses a URL with one of `schemes`; the port defaults to `default_port`.
/// A password in the URL is refused: secrets come from the environment or
/// a file.
pub(super) fn parse_url(text: &str, schemes: &[&str], default_port: u16) -> Result<Url, String> {
    let expected = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!(
            "{text:?} is not a URL (expected {expected}host:port)"
        ));
    };
    if !schemes.contains(&scheme) {
        return Err(format!(
            "unsupported scheme {scheme:?} in {text:?} (expected {expected})"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i + 1..].to_string()),
        None => (rest, String::new()),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            if userinfo.contains(':') {
                return Err(
                    "the URL holds a password: give it with `password_env` or `password_file` instead"
                        .into(),
                );
            }
            (Some(userinfo.to_string()), hp)
        }
        None => (None, authority),
    };
    let (host, port) = host_port(hostport, default_port).map_err(|e| format!("{e} in {text:?}"))?;
    Ok(Url {
        user,
        host,
        port,
        path,
    })
}

/// Parses `host[:port]` or `[ipv6][:port]`.
pub(super) fn host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        // [ipv6]:port
        let Some((h, after)) = rest.split_once(']') else {
            return Err("unclosed '['".into());
        };
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after the address")),
        };
        (h.to_string(), port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (text.to_string(), None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-._:".contains(ch))
    {
        return Err(format!("invalid host {host:?}"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("invalid port {p:?}")),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("postgres://weir@127.0.0.1:5433/test", &["postgres"], 5432).unwrap();
        assert_eq!(
            u,
            Url {
                user: Some("weir".into()),
                host: "127.0.0.1".into(),
                port: 5433,
                path: "test".into()
            }
        );
        assert_eq!(
            parse_url("mqtt://[::1]", &["mqtt"], 1883).unwrap().port,
            1883
        );
        assert!(parse_url("mqtt://a:b@h:1", &["mqtt"], 1)
            .unwrap_err()
            .contains("password"));
        assert!(parse_url("http://h:1", &["mqtt"], 1)
            .unwrap_err()
            .contains("unsupported scheme"));
        assert!(parse_url("h:1", &["mqtt"], 1)
            .unwrap_err()
            .contains("not a URL"));
        assert!(parse_url("mqtt://h:99999", &["mqtt"], 1)
            .unwrap_err()
            .contains("invalid port"));
        assert!(parse_url("mqtt://:1", &["mqtt"], 1)
            .unwrap_err()
            .contains("invalid host"));
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port("[::1]:9", 1), Ok(("::1".into(), 9)));
        assert_eq!(host_port("h", 7), Ok(("h".into(), 7)));
        assert_eq!(host_port("[::1", 1), Err("unclosed '['".into()));
        assert_eq!(
            host_port("[::1]x", 1),
            Err("unexpected \"x\" after the address".into())
        );
        assert_eq!(host_port("h:0", 1), Err("invalid port \"0\"".into()));
        assert_eq!(host_port("h st:1", 1), Err("invalid host \"h st\"".into()));
    }
}
