//! Rewriting stored identifiers to the current normal form (see [`super::normalize`]).

use sea_query::{Expr, ExprTrait, Query};
use sea_query_sqlx::SqlxValues;
use sqlx::Row;

use super::normalize::{
    IdentifierCase, IdentifierCollision, IdentifierMigrationReport, normalize_identifier,
    plan_renormalization,
};
use super::schema::{EMAIL, ID, IDENTIFIER, UPDATED_AT, USERS};
use crate::core::error::SentriError;
use crate::db::{Database, db_err, is_unique_violation, now_ms, on_pool};

/// A concurrent write changed a row or took an identifier while the migration ran.
fn concurrent_change() -> SentriError {
    SentriError::configuration(
        "identifier migration refused, nothing was changed: users were modified while it ran; run it again",
    )
}

fn map_update_error(err: sqlx::Error) -> SentriError {
    if is_unique_violation(&err) {
        concurrent_change()
    } else {
        db_err(err)
    }
}

impl Database {
    /// Runs [`Database::renormalize_identifiers`] once per database (recorded in the
    /// migrations table).
    pub(crate) async fn normalize_identifiers_once(
        &self,
        case: IdentifierCase,
    ) -> Result<(), SentriError> {
        let (component, version) = super::schema::IDENTIFIER_FORM;
        let applied = self.applied_migrations().await?;
        if applied.iter().any(|(c, v)| c == component && *v == version) {
            return Ok(());
        }
        let report = self.renormalize_identifiers(case).await?;
        if !report.updated.is_empty() {
            tracing::info!(
                rewritten = report.updated.len(),
                "sentri: stored identifiers moved to the current normal form"
            );
        }
        self.record_applied(component, version).await
    }

    /// Rewrites every stored identifier that is not in the normal form of `case` (see
    /// [`crate::identity::normalize_identifier`]) to that form, in one transaction; the
    /// stored addresses (`email`) are rewritten to the same form in that transaction (an
    /// address the profile refuses is left as it is).
    ///
    /// If two users would end up with the same identifier (two stored identifiers that
    /// normalise equal, or one that normalises to another user's), **nothing is changed**
    /// and a `CONFIGURATION_ERROR` is returned whose message lists the user ids of each
    /// group (never the identifiers); its `source` is an
    /// [`IdentifierCollision`] with all the groups. Users whose stored identifier the
    /// profile refuses (e.g. an invisible character) are left unchanged and listed in
    /// [`IdentifierMigrationReport::unnormalizable`]. Concurrent modification of a user
    /// during the run also refuses (run it again). Idempotent: a second run changes
    /// nothing.
    ///
    /// ```no_run
    /// # async fn demo(db: sentri::db::Database) -> Result<(), sentri::SentriError> {
    /// let report = db
    ///     .renormalize_identifiers(sentri::IdentifierCase::Insensitive)
    ///     .await?;
    /// println!("{} of {} identifiers rewritten", report.updated.len(), report.scanned);
    /// # Ok(()) }
    /// ```
    pub async fn renormalize_identifiers(
        &self,
        case: IdentifierCase,
    ) -> Result<IdentifierMigrationReport, SentriError> {
        let (rows, emails) = self.user_identifiers().await?;
        let scanned = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        let plan = plan_renormalization(rows, case).map_err(IdentifierCollision::into_error)?;
        // Stored addresses follow their identifiers, so that "verified for the current
        // address" still holds once both are in the new form.
        let email_changes: Vec<(String, String, String)> = emails
            .into_iter()
            .filter_map(|(id, old)| match normalize_identifier(&old, case) {
                Ok(new) if new != old => Some((id, old, new)),
                _ => None,
            })
            .collect();
        if !plan.changes.is_empty() || !email_changes.is_empty() {
            let statements = plan
                .changes
                .iter()
                .map(|(id, old, new)| self.identifier_update(id, old, new))
                .chain(
                    email_changes
                        .iter()
                        .map(|(id, old, new)| self.email_update(id, old, new)),
                )
                .collect();
            self.apply_in_one_transaction(statements).await?;
        }
        if !plan.unnormalizable.is_empty() {
            tracing::warn!(
                users = plan.unnormalizable.len(),
                "stored identifiers refused by the identifier profile were left unchanged"
            );
        }
        Ok(IdentifierMigrationReport {
            scanned,
            updated: plan.changes.into_iter().map(|(id, _, _)| id).collect(),
            unnormalizable: plan.unnormalizable,
        })
    }

    /// Every user's `(id, identifier)`, and `(id, email)` of those with a stored address.
    async fn user_identifiers(
        &self,
    ) -> Result<(Vec<(String, String)>, Vec<(String, String)>), SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .columns([ID, IDENTIFIER, EMAIL])
                .from(USERS)
                .to_owned(),
        );
        let rows: Vec<(String, String, Option<String>)> = self
            .read(|| async {
                on_pool!(self, pool => {
                    let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                        .fetch_all(pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter()
                        .map(|row| Ok((
                            row.try_get::<String, _>(ID).map_err(db_err)?,
                            row.try_get::<String, _>(IDENTIFIER).map_err(db_err)?,
                            row.try_get::<Option<String>, _>(EMAIL).map_err(db_err)?,
                        )))
                        .collect()
                })
            })
            .await?;
        let emails = rows
            .iter()
            .filter_map(|(id, _, email)| Some((id.clone(), email.clone()?)))
            .collect();
        let identifiers = rows.into_iter().map(|(id, ident, _)| (id, ident)).collect();
        Ok((identifiers, emails))
    }

    /// `UPDATE … SET email = new WHERE id = id AND email = old`.
    fn email_update(&self, id: &str, old: &str, new: &str) -> (String, SqlxValues) {
        self.build(
            &Query::update()
                .table(USERS)
                .value(EMAIL, new)
                .and_where(Expr::col(ID).eq(id))
                .and_where(Expr::col(EMAIL).eq(old))
                .to_owned(),
        )
    }

    /// `UPDATE … SET identifier = new WHERE id = id AND identifier = old`.
    fn identifier_update(&self, id: &str, old: &str, new: &str) -> (String, SqlxValues) {
        self.build(
            &Query::update()
                .table(USERS)
                .value(IDENTIFIER, new)
                .value(UPDATED_AT, now_ms())
                .and_where(Expr::col(ID).eq(id))
                .and_where(Expr::col(IDENTIFIER).eq(old))
                .to_owned(),
        )
    }

    /// Runs `statements` in one transaction; each must change exactly one row, else the
    /// transaction is rolled back.
    async fn apply_in_one_transaction(
        &self,
        statements: Vec<(String, SqlxValues)>,
    ) -> Result<(), SentriError> {
        self.bounded(async {
            on_pool!(self, pool => {
                let mut tx = pool.begin().await.map_err(db_err)?;
                for (sql, values) in statements {
                    let done = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_update_error)?;
                    if done.rows_affected() != 1 {
                        tx.rollback().await.map_err(db_err)?;
                        return Err(concurrent_change());
                    }
                }
                tx.commit().await.map_err(db_err)
            })
        })
        .await
    }
}
