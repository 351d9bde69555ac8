//! How the server authenticates a request for its guard layers: a capability's
//! credential (e.g. an API key), else the access token (bearer, then cookie) of a live
//! session, else a silent refresh from the refresh cookie.

use axum::http::request::Parts;

use super::{Inner, LateGuard, ServerAuth};
use crate::core::BoxFuture;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::principal::Assurance;
use crate::core::principal::Permissions;
use crate::http::cookies::bearer_token;
use crate::http::guard::not_admitted;
use crate::http::{Admits, Authenticate, Authenticated, CurrentUser, parts_meta};

impl ServerAuth {
    /// The access token of a request: `Authorization: Bearer` first, else the access
    /// cookie. `None` when there is none (or the bearer header is malformed).
    pub fn get_current_access_token<'a>(&self, parts: &'a Parts) -> Option<&'a str> {
        self.access_token_of(parts).ok().flatten().map(|(t, _)| t)
    }

    /// Bearer header first, else the access cookie (`true`: from the cookie); `Err` for
    /// a malformed bearer header.
    fn access_token_of<'a>(&self, parts: &'a Parts) -> Result<Option<(&'a str, bool)>> {
        match bearer_token(&parts.headers) {
            Ok(Some(t)) => Ok(Some((t, false))),
            Ok(None) => Ok(self
                .inner
                .core
                .transport
                .access_cookie_value(&parts.headers)
                .map(|t| (t, true))),
            Err(()) => Err(SentriError::token_invalid("Malformed Authorization header")),
        }
    }

    async fn authenticate_request(&self, parts: &Parts, admits: &Admits) -> Result<Authenticated> {
        if !self.inner.credentials.is_empty() {
            return self.authenticate_with_credentials(parts, admits).await;
        }
        self.authenticate_token(parts).await
    }

    /// Capability credentials first; the access token when none of them applies. A
    /// presented credential of a kind the guard does not admit is refused before it is
    /// looked up.
    fn authenticate_with_credentials<'a>(
        &'a self,
        parts: &'a Parts,
        admits: &'a Admits,
    ) -> BoxFuture<'a, Result<Authenticated>> {
        Box::pin(async move {
            for credential in &self.inner.credentials {
                if !credential.presented(parts) {
                    continue;
                }
                if !admits.admits_kind(credential.kind()) {
                    return Err(not_admitted());
                }
                if let Some(user) = credential.authenticate(self.core(), parts).await? {
                    return Ok(Authenticated {
                        user,
                        assurance: None,
                        set_cookies: Vec::new(),
                    });
                }
            }
            self.authenticate_token(parts).await
        })
    }

    async fn authenticate_token(&self, parts: &Parts) -> Result<Authenticated> {
        let token = self.access_token_of(parts)?;
        let transport = &self.inner.core.transport;
        if let Some((_, true)) = token {
            transport.check_cookie_request(&parts.headers, &parts.method)?;
        }
        let claims = match token {
            Some((token, _)) => match self.verify_access_reloading(token).await {
                Ok(claims) => claims,
                Err(err) if err.is(&ErrorCode::TokenExpired) => {
                    return self.silent_refresh(parts, true).await;
                }
                Err(err) => return Err(err),
            },
            None => return self.silent_refresh(parts, false).await,
        };
        match self
            .inner
            .core
            .sessions
            .session_version(&claims.sid, &claims.sub)
            .await?
        {
            None => return Err(SentriError::token_invalid("Session has been revoked")),
            // The user's roles changed after this token was signed: refresh (silently
            // with a refresh cookie), else TOKEN_EXPIRED so the client refreshes.
            Some(current) if claims.av.unwrap_or(0) < current => {
                return self.silent_refresh(parts, true).await;
            }
            Some(_) => {}
        }
        self.check_app_revocation(&claims.sid).await?;
        Ok(Authenticated {
            assurance: claims.assurance(),
            user: CurrentUser::from(claims),
            set_cookies: Vec::new(),
        })
    }

    /// No access token, or an expired one: try a silent refresh from the refresh cookie.
    ///
    /// Boxed on purpose: the refresh future is large, and keeping it out of
    /// `authenticate_token` keeps the per-request future (allocated and moved on every
    /// protected request) small.
    fn silent_refresh<'a>(
        &'a self,
        parts: &'a Parts,
        expired: bool,
    ) -> BoxFuture<'a, Result<Authenticated>> {
        Box::pin(async move {
            let transport = &self.inner.core.transport;
            let Some(refresh) = transport.refresh_cookie_value(&parts.headers) else {
                return Err(refused(expired));
            };
            transport.check_cookie_request(&parts.headers, &parts.method)?;
            let res = self
                .refresh_request(refresh, parts_meta(parts))
                .await
                .map_err(|e| {
                    if e.status().is_server_error() {
                        e
                    } else {
                        refused(expired)
                    }
                })?;
            let set_cookies = transport.session_cookies(&res);
            // The refreshed token carries the family's assurance (never more).
            let assurance = self
                .inner
                .tokens
                .verify_access(&res.access_token)?
                .assurance();
            Ok(Authenticated {
                assurance,
                user: CurrentUser {
                    user: res.user,
                    session_id: res.session_id,
                    credential: None,
                    workspace_id: res.workspace_id,
                },
                set_cookies,
            })
        })
    }
}

/// TOKEN_EXPIRED after an expired access token, UNAUTHORIZED without one.
fn refused(expired: bool) -> SentriError {
    if expired {
        SentriError::token_expired()
    } else {
        SentriError::unauthorized("Authentication required")
    }
}

impl Authenticate for ServerAuth {
    fn authenticate<'a>(
        &'a self,
        parts: &'a Parts,
        admits: &'a Admits,
    ) -> BoxFuture<'a, Result<Authenticated>> {
        Box::pin(self.authenticate_request(parts, admits))
    }

    fn check_sensitive(&self, assurance: Option<&Assurance>) -> Result<()> {
        self.core().check_sensitive(assurance)
    }

    fn valid_roles(&self) -> Option<&[String]> {
        Some(ServerAuth::valid_roles(self))
    }

    fn permissions<'a>(&'a self, user: &'a CurrentUser) -> BoxFuture<'a, Result<Permissions>> {
        Box::pin(
            self.core()
                .identity
                .catalogue
                .permissions_of(&user.user.roles),
        )
    }

    fn cached_permissions(&self, user: &CurrentUser) -> Option<Permissions> {
        self.core().identity.catalogue.cached(&user.user.roles)
    }

    fn known_permissions(&self) -> Option<Vec<String>> {
        Some(
            self.core()
                .identity
                .catalogue
                .known()
                .iter()
                .cloned()
                .collect(),
        )
    }
}

impl LateGuard {
    fn server(&self) -> Option<ServerAuth> {
        let inner: std::sync::Arc<Inner> = self.0.get()?.upgrade()?;
        Some(ServerAuth { inner })
    }
}

impl Authenticate for LateGuard {
    fn authenticate<'a>(
        &'a self,
        parts: &'a Parts,
        admits: &'a Admits,
    ) -> BoxFuture<'a, Result<Authenticated>> {
        Box::pin(async move {
            match self.server() {
                Some(auth) => auth.authenticate_request(parts, admits).await,
                // The server is gone: deny (layers fail closed).
                None => Err(SentriError::unauthorized("Authentication required")),
            }
        })
    }

    fn valid_roles(&self) -> Option<&[String]> {
        None
    }

    fn check_sensitive(&self, assurance: Option<&Assurance>) -> Result<()> {
        match self.server() {
            Some(auth) => auth.core().check_sensitive(assurance),
            None => Err(SentriError::unauthorized("Authentication required")),
        }
    }

    fn permissions<'a>(&'a self, user: &'a CurrentUser) -> BoxFuture<'a, Result<Permissions>> {
        Box::pin(async move {
            match self.server() {
                Some(auth) => auth.permissions(user).await,
                None => Ok(Permissions::default()),
            }
        })
    }
}
