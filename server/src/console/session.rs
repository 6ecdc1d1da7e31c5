//! Console sessions: kept in the server's memory (a restart logs everyone
//! out), found by a random id that is the only thing the browser holds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::app::Actor;

/// How long a session lasts from its login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Sessions kept at most: beyond, the oldest is dropped (its operator logs
/// in again).
const MAX_SESSIONS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    id: String,
    pub actor: Actor,
    /// Every POST of this session must carry it (the forms' hidden field).
    pub csrf: String,
    expires: Instant,
}

impl Session {
    pub fn csrf_matches(&self, presented: &str) -> bool {
        !presented.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    cookie_name: &'static str,
    /// `; Secure` under TLS.
    secure: &'static str,
}

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    pub fn new(tls: bool) -> Self {
        // `__Host-`: the browser accepts it only Secure, for this host and
        // path `/`, so no other site or subdomain can plant one.
        let (cookie_name, secure) = if tls { ("__Host-kiln_session", "; Secure") } else { ("kiln_session", "") };
        Self { by_id: Mutex::default(), cookie_name, secure }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `actor`; returns its `Set-Cookie` value.
    pub fn create(&self, actor: Actor) -> String {
        let session = Session { id: random_id(), actor, csrf: random_id(), expires: Instant::now() + SESSION_LIFETIME };
        let cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.cookie_name,
            session.id,
            SESSION_LIFETIME.as_secs(),
            self.secure
        );
        let mut sessions = self.lock();
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.values().min_by_key(|s| s.expires).map(|s| s.id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(session.id.clone(), session);
        cookie
    }

    /// The unexpired session the request's cookie names.
    pub fn of_request(&self, headers: &HeaderMap) -> Option<Session> {
        let id = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie_name)
            .map(|(_, value)| value.trim().to_string())?;
        let mut sessions = self.lock();
        match sessions.get(&id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                sessions.remove(&id);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, session: &Session) {
        self.lock().remove(&session.id);
    }

    /// A `Set-Cookie` value that deletes the session cookie.
    pub fn clearing_cookie(&self) -> String {
        format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}", self.cookie_name, self.secure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_header(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("other=1; {pair}").parse().unwrap());
        h
    }

    #[test]
    fn sessions_are_found_by_cookie_and_removed() {
        let sessions = Sessions::new(true);
        let cookie = sessions.create(Actor::Operator);
        assert!(cookie.starts_with("__Host-kiln_session="), "{cookie}");
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/", "Max-Age=43200"] {
            assert!(cookie.contains(attr), "{cookie} lacks {attr}");
        }
        let s = sessions.of_request(&cookie_header(&cookie)).expect("session");
        assert_eq!(s.actor, Actor::Operator);
        assert!(s.csrf_matches(&s.csrf.clone()));
        assert!(!s.csrf_matches(""));
        assert!(!s.csrf_matches("guess"));
        assert!(sessions.of_request(&cookie_header("__Host-kiln_session=made-up")).is_none());
        sessions.remove(&s);
        assert!(sessions.of_request(&cookie_header(&cookie)).is_none(), "logged out");
        let plain = Sessions::new(false).create(Actor::Operator);
        assert!(plain.starts_with("kiln_session=") && !plain.contains("Secure"), "{plain}");
    }
}
