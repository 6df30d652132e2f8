//! How a store URL is shown in messages and logs: [`redact_url`].

/// `url` with its password replaced by `***`: the user name, host, path and
/// query stay (an operator needs them to tell stores apart), and so does an
/// empty password's colon. Query parameters that carry a secret
/// (`password`, `pass`, `secret`, `token`, `sslpassword`) are masked too.
/// Every backend and front door shows URLs through this one function.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &base[s + 3..at];
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => userinfo.to_owned(),
            };
            format!("{}://{shown}@{}", &base[..s], &base[at + 1..])
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    const SECRET: &[&str] = &["password", "pass", "secret", "token", "sslpassword"];
    SECRET.iter().any(|s| key.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_masked_and_everything_else_kept() {
        assert_eq!(redact_url("redis://u:p@h:1"), "redis://u:***@h:1");
        assert_eq!(redact_url("redis://:p@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact_url("redis://u@h:1"), "redis://u@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("sqlite://./a.db"), "sqlite://./a.db");
        assert_eq!(
            redact_url("rediss://u:p@h:1?ca=/ca.pem&prefix=q"),
            "rediss://u:***@h:1?ca=/ca.pem&prefix=q"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=s3cret&sslmode=verify-full"),
            "postgres://h/db?user=u&password=***&sslmode=verify-full"
        );
        // An `@` in the password: the last one ends the user info.
        assert_eq!(redact_url("redis://u:p@ss@h:1"), "redis://u:***@h:1");
    }
}
