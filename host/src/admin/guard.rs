//! Who may call the admin API: every request must name a host this listener serves (`Host`,
//! against DNS rebinding), come from no other web origin (`Origin`, against pages in a browser)
//! and, except for the console's static page shell, carry a token (`Authorization: Bearer …`):
//! the admin token for anything, the read-only token for `GET`s. A refusal is logged and
//! counted ([`AdminRefused`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::token::AdminTokens;
use crate::config::AdminConfig;
use crate::observe::{AdminRefused, HostEvent};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token (`401`).
    MissingToken,
    /// A token that is neither the admin nor the read-only one (`403`).
    WrongToken,
    /// The read-only token on a call that changes something (`403`).
    ReadOnlyToken,
    /// A `Host` this listener does not serve (`403`); the value as sent.
    BadHost(String),
    /// A browser `Origin` other than the admin API's own (`403`); the value as sent.
    BadOrigin(String),
}

impl Refusal {
    /// The metric label and log field.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::WrongToken => "wrong_token",
            Refusal::ReadOnlyToken => "read_only_token",
            Refusal::BadHost(_) => "bad_host",
            Refusal::BadOrigin(_) => "bad_origin",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Refusal::MissingToken => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::MissingToken => "the admin API needs a token: send Authorization: Bearer \
                <token> (the CLI reads --admin-token, STAGEHOST_ADMIN_TOKEN or the token a \
                loopback host generates in <state.dir>/admin-token; `stagehost console` prints \
                the console's address with it)"
                .into(),
            Refusal::WrongToken => "this token is not valid for the admin API".into(),
            Refusal::ReadOnlyToken => {
                "the read-only token may only read (GET); this call needs the admin token".into()
            }
            Refusal::BadHost(host) => format!(
                "Host {host:?} is not served here: the admin API answers its listen address, \
                 loopback addresses, localhost and admin.allowed_hosts"
            ),
            Refusal::BadOrigin(origin) => format!(
                "requests from the web origin {origin:?} are refused: the admin API serves only \
                 its own pages"
            ),
        }
    }
}

/// The rules the admin listener applies to every request.
#[derive(Debug)]
pub struct AdminGuard {
    tokens: AdminTokens,
    /// The listen address's IP: a `Host` naming it is served (any IP when unspecified).
    listen_ip: Option<IpAddr>,
    /// `admin.allowed_hosts`, lowercased.
    allowed_hosts: Vec<String>,
}

impl AdminGuard {
    /// The guard of the admin API of `config`, accepting `tokens`.
    pub fn new(tokens: AdminTokens, config: &AdminConfig) -> Self {
        Self {
            tokens,
            listen_ip: config.listen.parse::<SocketAddr>().ok().map(|a| a.ip()),
            allowed_hosts: config
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request with `method`, `path` and `headers` may be served.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = header_text(headers, header::HOST).unwrap_or_default();
        if !self.serves_host(&host) {
            return Err(Refusal::BadHost(host));
        }
        if let Some(origin) = header_text(headers, header::ORIGIN)
            && !same_origin(&origin, &host)
        {
            return Err(Refusal::BadOrigin(origin));
        }
        if is_page_shell(method, path) {
            return Ok(());
        }
        let Some(offered) = bearer(headers) else {
            return Err(Refusal::MissingToken);
        };
        if self.tokens.admin.matches(offered) {
            return Ok(());
        }
        match &self.tokens.read {
            Some(read) if read.matches(offered) => {
                if is_read(method) {
                    Ok(())
                } else {
                    Err(Refusal::ReadOnlyToken)
                }
            }
            _ => Err(Refusal::WrongToken),
        }
    }

    /// Whether `host` (a `Host` header: a name or address, maybe with a port) is this listener's.
    fn serves_host(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.is_empty() {
            return false;
        }
        if name == "localhost" || self.allowed_hosts.contains(&name) {
            return true;
        }
        match name.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => {
                ip.is_loopback()
                    || self
                        .listen_ip
                        .is_some_and(|listen| listen.is_unspecified() || listen == ip)
            }
            Err(_) => false,
        }
    }
}

/// The middleware that applies `guard` to every request of the admin router.
pub async fn guard(State(guard): State<Arc<AdminGuard>>, request: Request, next: Next) -> Response {
    match guard.check(request.method(), request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            AdminRefused {
                reason: refusal.reason(),
                method: request.method().as_str(),
                path: request.uri().path(),
                detail: match &refusal {
                    Refusal::BadHost(value) | Refusal::BadOrigin(value) => value,
                    _ => "",
                },
            }
            .emit();
            refuse(&refusal)
        }
    }
}

fn refuse(refusal: &Refusal) -> Response {
    let mut response = (
        refusal.status(),
        axum::Json(json!({ "error": refusal.message() })),
    )
        .into_response();
    if *refusal == Refusal::MissingToken {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"stagehost admin\""),
        );
    }
    response
}

/// The console's page and its static files: no data in them, served without a token so a
/// browser can load the page that then reads its token from the address's fragment.
fn is_page_shell(method: &Method, path: &str) -> bool {
    is_read(method) && (path == "/" || path == "/console" || path.starts_with("/console/"))
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// The name or address of a `Host` value, lowercased, without its port or a final dot.
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    let name = if host.starts_with('[') {
        host.split_inclusive(']')
            .next()
            .unwrap_or_default()
            .to_string()
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
            _ => host,
        }
    };
    name.trim_end_matches('.').to_string()
}

/// Whether the browser `origin` is the page's own: `http(s)://` and the very `host` asked.
fn same_origin(origin: &str, host: &str) -> bool {
    let origin = origin.trim().to_ascii_lowercase();
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| !a.is_empty() && a == host.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::token::Token;

    const ADMIN: &str = "admin-token-0123456789";
    const READ: &str = "read-token-0123456789";

    fn guard(listen: &str, allowed: &[&str]) -> AdminGuard {
        let config = AdminConfig {
            listen: listen.into(),
            allowed_hosts: allowed.iter().map(|h| h.to_string()).collect(),
            ..AdminConfig::default()
        };
        let tokens = AdminTokens {
            admin: Token::new(ADMIN),
            read: Some(Token::new(READ)),
            generated: None,
            unwritten: None,
        };
        AdminGuard::new(tokens, &config)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn check(
        guard: &AdminGuard,
        method: Method,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> Result<(), Refusal> {
        guard.check(&method, path, &headers(pairs))
    }

    #[test]
    fn tokens_decide_what_may_be_called() {
        let g = guard("127.0.0.1:9091", &[]);
        let host = ("host", "127.0.0.1:9091");
        let admin = ("authorization", "Bearer admin-token-0123456789");
        let read = ("authorization", "bearer read-token-0123456789");
        assert_eq!(
            check(&g, Method::GET, "/plugins", &[host]),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            check(
                &g,
                Method::GET,
                "/plugins",
                &[host, ("authorization", "Basic YTpi")]
            ),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            check(
                &g,
                Method::GET,
                "/metrics",
                &[host, ("authorization", "Bearer admin-token-012345678")]
            ),
            Err(Refusal::WrongToken)
        );
        assert_eq!(check(&g, Method::GET, "/metrics", &[host, read]), Ok(()));
        assert_eq!(check(&g, Method::GET, "/api/dlq", &[host, read]), Ok(()));
        assert_eq!(
            check(&g, Method::PUT, "/plugins/warehouse", &[host, read]),
            Err(Refusal::ReadOnlyToken)
        );
        assert_eq!(
            check(&g, Method::POST, "/stuck/s/t/0/skip", &[host, read]),
            Err(Refusal::ReadOnlyToken)
        );
        assert_eq!(
            check(&g, Method::PUT, "/plugins/warehouse", &[host, admin]),
            Ok(())
        );
        assert_eq!(
            check(&g, Method::POST, "/api/dlq/replay", &[host, admin]),
            Ok(())
        );
    }

    #[test]
    fn the_page_shell_needs_no_token_but_its_data_does() {
        let g = guard("127.0.0.1:9091", &[]);
        let host = ("host", "localhost:9091");
        for path in ["/", "/console", "/console/app.js"] {
            assert_eq!(check(&g, Method::GET, path, &[host]), Ok(()), "{path}");
        }
        assert_eq!(
            check(&g, Method::POST, "/", &[host]),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            check(&g, Method::GET, "/api/topology", &[host]),
            Err(Refusal::MissingToken)
        );
    }

    #[test]
    fn only_the_listeners_own_hosts_are_served() {
        let admin = ("authorization", "Bearer admin-token-0123456789");
        let loopback = guard("127.0.0.1:9091", &["Stagehost"]);
        for host in [
            "127.0.0.1:9091",
            "localhost:9091",
            "LOCALHOST",
            "[::1]:9091",
            "127.0.0.2",
            "stagehost:9091",
            "localhost.",
        ] {
            assert_eq!(
                check(&loopback, Method::GET, "/plugins", &[("host", host), admin]),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "attacker.example",
            "attacker.example:9091",
            "10.0.0.5:9091",
            "localhost.attacker.example",
            "",
        ] {
            assert_eq!(
                check(&loopback, Method::GET, "/plugins", &[("host", host), admin]),
                Err(Refusal::BadHost(host.into())),
                "{host}"
            );
        }
        assert_eq!(
            check(&loopback, Method::GET, "/", &[admin]),
            Err(Refusal::BadHost(String::new()))
        );
        let everywhere = guard("0.0.0.0:9091", &[]);
        assert_eq!(
            check(
                &everywhere,
                Method::GET,
                "/plugins",
                &[("host", "10.0.0.5:9091"), admin]
            ),
            Ok(())
        );
        assert!(
            check(
                &everywhere,
                Method::GET,
                "/plugins",
                &[("host", "rebound.example:9091"), admin]
            )
            .is_err()
        );
        let one = guard("10.0.0.5:9091", &[]);
        assert_eq!(
            check(
                &one,
                Method::GET,
                "/plugins",
                &[("host", "10.0.0.5:9091"), admin]
            ),
            Ok(())
        );
        assert!(
            check(
                &one,
                Method::GET,
                "/plugins",
                &[("host", "10.0.0.6:9091"), admin]
            )
            .is_err()
        );
    }

    #[test]
    fn browser_origins_other_than_its_own_are_refused() {
        let g = guard("127.0.0.1:9091", &[]);
        let host = ("host", "127.0.0.1:9091");
        let admin = ("authorization", "Bearer admin-token-0123456789");
        assert_eq!(
            check(
                &g,
                Method::POST,
                "/plugins/w/rollback",
                &[host, admin, ("origin", "http://127.0.0.1:9091")]
            ),
            Ok(())
        );
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9092",
            "null",
            "http://127.0.0.1:9091.evil.example",
            "file://",
        ] {
            assert_eq!(
                check(
                    &g,
                    Method::POST,
                    "/plugins/w/rollback",
                    &[host, admin, ("origin", origin)]
                ),
                Err(Refusal::BadOrigin(origin.into())),
                "{origin}"
            );
        }
        // Even the page shell: a foreign page has no business there.
        assert!(
            check(
                &g,
                Method::GET,
                "/",
                &[host, ("origin", "http://evil.example")]
            )
            .is_err()
        );
    }

    #[test]
    fn host_names_drop_ports_and_final_dots() {
        assert_eq!(host_name("Example.COM:80"), "example.com");
        assert_eq!(host_name("[::1]:9091"), "[::1]");
        assert_eq!(host_name("localhost."), "localhost");
        assert_eq!(host_name("a:b"), "a:b");
    }
}
