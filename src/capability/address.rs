//! Only verified addresses are trusted: which address of an account is verified, and
//! what the first proof of control of an address does to an account that was
//! registered without it (the pre-hijacking defence).
//!
//! Shared by the capabilities that sign in by address (sign-in links, single sign-on)
//! or bind something to an address (workspace invitations).

use sea_query::{Condition, Expr, ExprTrait, Query};

use super::{Core, CredentialReset};
use crate::core::error::Result;
use crate::identity::schema::{
    EMAIL, EMAIL_VERIFIED_AT, ID, IDENTIFIER, PASSWORD_HASH, UPDATED_AT, USERS,
};
use crate::identity::{EmailState, unusable_password_hash};
use crate::mail::is_address;

impl Core {
    /// The account's address: its identifier when that is an address, else the stored
    /// one. (An associated function of `Core` so that capabilities reach it without
    /// importing this module.)
    pub(crate) fn address_of(identifier: &str, state: &EmailState) -> Option<String> {
        if is_address(identifier) {
            return Some(identifier.to_owned());
        }
        state.email.clone()
    }

    /// Verified: a verification time is stored *for the current address* (changing the
    /// address therefore asks for a new verification).
    pub(crate) fn is_verified(identifier: &str, state: &EmailState) -> bool {
        state.verified_at.is_some()
            && state.email.is_some()
            && Self::address_of(identifier, state) == state.email
    }

    /// The account's address when it is verified (see [`Core::is_verified`]); `None` for an
    /// unknown user, an account without an address or with an unverified one.
    pub(crate) async fn verified_address(&self, user_id: &str) -> Result<Option<String>> {
        let db = &self.identity.db;
        let Some(user) = db.find_user_by_id(user_id).await? else {
            return Ok(None);
        };
        let state = db.user_email(user_id).await?.unwrap_or_default();
        Ok(Self::is_verified(&user.identifier, &state)
            .then(|| Self::address_of(&user.identifier, &state))
            .flatten())
    }

    /// A sign-in has just proven control of `address` (a used sign-in link, a provider's
    /// verified e-mail), which must be the account's current address (else nothing
    /// happens, `Ok(false)`). When that address was not verified yet, nothing set up
    /// before this proof is trusted: in one statement the address is marked verified
    /// and the password (set without the proof) is removed, then every credential of
    /// the account ends ([`Core::end_every_credential`] with
    /// [`CredentialReset::AddressProven`]). `Ok(true)` in that case; the caller opens
    /// the new session afterwards. An already verified address changes nothing.
    ///
    /// A password login that raced it is undone by the login's own re-read of the
    /// password hash; a session opened before it is ended by it.
    pub(crate) async fn address_proven(&self, user_id: &str, address: &str) -> Result<bool> {
        let db = &self.identity.db;
        let Some(user) = db.find_user_by_id(user_id).await? else {
            return Ok(false);
        };
        let state = db.user_email(user_id).await?.unwrap_or_default();
        if Self::address_of(&user.identifier, &state).as_deref() != Some(address) {
            return Ok(false);
        }
        let now = self.now_ms();
        // Not yet verified for this address (written without NOT over a NULL).
        let unproven = Condition::any()
            .add(Expr::col(EMAIL_VERIFIED_AT).is_null())
            .add(Expr::col(EMAIL).is_null())
            .add(Expr::col(EMAIL).ne(address));
        let stmt = Query::update()
            .table(USERS)
            .value(EMAIL, address)
            .value(EMAIL_VERIFIED_AT, now)
            .value(PASSWORD_HASH, unusable_password_hash())
            .value(UPDATED_AT, now)
            .and_where(Expr::col(ID).eq(user_id))
            // The identifier read above: a concurrent identifier change wins.
            .and_where(Expr::col(IDENTIFIER).eq(user.identifier.as_str()))
            .cond_where(unproven)
            .to_owned();
        if db.exec(db.build(&stmt)).await? == 0 {
            return Ok(false);
        }
        tracing::info!(
            user = %user_id,
            "sentri: first proof of the account's address; earlier credentials ended"
        );
        self.end_every_credential(user_id, CredentialReset::AddressProven)
            .await?;
        Ok(true)
    }
}
