//! The live-session read of `protect()` with the user's authorization version, and
//! the reads of users together with it (so a token's roles and version come from one
//! statement).

use sea_query::{Expr, ExprTrait, Query};

use super::schema::{EXPIRES_AT, FAMILIES, ID, MAX_EXPIRES_AT, REVOKED_AT, USER_ID};
use crate::core::error::SentriError;
use crate::core::principal::AuthUser;
use crate::db::{Database, db_err, on_pool};
use crate::identity::roles::schema::AUTHZ_VERSION;
use crate::identity::schema::USERS;

impl Database {
    /// The authorization version of the user of family `id` while the family is live
    /// at `now` (one primary-key lookup joined with the user row); `None` when revoked
    /// or ended.
    pub(crate) async fn family_authz(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<i64>, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .column((USERS, AUTHZ_VERSION))
                .from(FAMILIES)
                .inner_join(USERS, Expr::col((USERS, "id")).equals((FAMILIES, USER_ID)))
                .and_where(Expr::col((FAMILIES, ID)).eq(id))
                .and_where(Expr::col((FAMILIES, REVOKED_AT)).is_null())
                .and_where(Expr::col((FAMILIES, EXPIRES_AT)).gt(now))
                .and_where(Expr::col((FAMILIES, MAX_EXPIRES_AT)).gt(now))
                .limit(1)
                .to_owned(),
        );
        self.read(|| async {
            on_pool!(self, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
                row.map(|r| sqlx::Row::try_get::<i64, _>(&r, 0).map_err(db_err))
                    .transpose()
            })
        })
        .await
    }

    /// The user as a token carries it and the authorization version, read together.
    pub(crate) async fn stamped_user(
        &self,
        id: &str,
    ) -> Result<Option<(AuthUser, i64)>, SentriError> {
        Ok(self
            .find_user_by_id(id)
            .await?
            .map(|u| (u.to_auth_user(), u.authz_version)))
    }
}
