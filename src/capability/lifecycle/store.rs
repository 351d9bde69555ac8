//! The lifecycle tokens table (component `lifecycle`): one row per emailed token or
//! code, stored only as a hash, single use (`used_at`), attempts counted per row.

use sea_query::{
    ColumnDef, DeleteStatement, Expr, ExprTrait, ForeignKey, ForeignKeyAction, Func, Order, Query,
    Table, UpdateStatement,
};
use sea_query_sqlx::SqlxValues;

use crate::core::error::{Result, SentriError};
use crate::db::{Columns, Database, Migration, Step, StepsOutcome, Target, db_err, on_pool};
use crate::identity::schema::{self as users, USERS};

pub(super) const TOKENS: &str = "sentri_lifecycle_tokens";
const ID: &str = "id";
const USER_ID: &str = "user_id";
const PURPOSE: &str = "purpose";
const TOKEN_HASH: &str = "token_hash";
const ADDRESS: &str = "address";
const ATTEMPTS: &str = "attempts";
const EXPIRES_AT: &str = "expires_at";
const CREATED_AT: &str = "created_at";
const USED_AT: &str = "used_at";
const COLUMNS: [&str; 9] = [
    ID, USER_ID, PURPOSE, TOKEN_HASH, ADDRESS, ATTEMPTS, EXPIRES_AT, CREATED_AT, USED_AT,
];

/// Sign-up links (`magic_link_signup`): sent to an address that has no account yet, so
/// bound to the address, not to a user.
pub(super) const SIGNUPS: &str = "sentri_lifecycle_signups";

/// Rows that a code check of an account without a live code spends an attempt of, so
/// that every check writes one row: a known address answers in the time of an unknown
/// one (component `lifecycle` version 3).
const DECOYS: &str = "sentri_lifecycle_decoys";
/// How many decoy rows (spread so that concurrent checks do not queue on one row).
pub(super) const DECOY_ROWS: u8 = 16;

/// The migrations of the lifecycle capability.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "lifecycle",
        version: 1,
        up: tokens_table,
    },
    Migration {
        component: "lifecycle",
        version: 2,
        up: signups_table,
    },
    Migration {
        component: "lifecycle",
        version: 3,
        up: decoys_table,
    },
];

fn signups_table(target: Target) -> Vec<String> {
    let mut table = Table::create();
    table
        .table(SIGNUPS)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(
            ColumnDef::new(TOKEN_HASH)
                .string_len(64)
                .not_null()
                .unique_key(),
        )
        .col(ColumnDef::new(ADDRESS).string_len(320).not_null())
        .col(ColumnDef::new(EXPIRES_AT).big_integer().not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(USED_AT).big_integer().null());
    target.create_table(table.to_owned(), vec![Target::index(SIGNUPS, EXPIRES_AT)])
}

fn decoys_table(target: Target) -> Vec<String> {
    let mut table = Table::create();
    table
        .table(DECOYS)
        .col(ColumnDef::new(ID).integer().not_null().primary_key())
        .col(ColumnDef::new(ATTEMPTS).big_integer().not_null());
    let mut out = target.create_table(table.to_owned(), Vec::new());
    // Emptied first, so that a step re-run after a partial failure (MySQL commits each
    // DDL statement) inserts the rows once.
    out.push(target.query(&Query::delete().from_table(DECOYS).to_owned()));
    let mut insert = Query::insert();
    insert.into_table(DECOYS).columns([ID, ATTEMPTS]);
    for slot in 0..DECOY_ROWS {
        insert.values_panic([Expr::val(i32::from(slot)), Expr::val(0i64)]);
    }
    out.push(target.query(&insert));
    out
}

fn tokens_table(target: Target) -> Vec<String> {
    let mut table = Table::create();
    table
        .table(TOKENS)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(PURPOSE).string_len(16).not_null())
        .col(
            ColumnDef::new(TOKEN_HASH)
                .string_len(64)
                .not_null()
                .unique_key(),
        )
        .col(ColumnDef::new(ADDRESS).string_len(320).not_null())
        .col(ColumnDef::new(ATTEMPTS).big_integer().not_null())
        .col(ColumnDef::new(EXPIRES_AT).big_integer().not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(USED_AT).big_integer().null())
        .foreign_key(
            &mut ForeignKey::create()
                .name("fk_sentri_lifecycle_tokens_user")
                .from(TOKENS, USER_ID)
                .to(USERS, users::ID)
                .on_delete(ForeignKeyAction::Cascade)
                .to_owned(),
        );
    target.create_table(table.to_owned(), vec![Target::index(TOKENS, USER_ID)])
}

/// What a token is for. A token of one purpose is never accepted for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Verify,
    Reset,
    Magic,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
            Self::Magic => "magic",
        }
    }
}

/// One stored token (its hash only).
#[derive(Debug, Clone)]
pub(super) struct TokenRow {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) token_hash: String,
    pub(super) address: String,
}

/// The account's columns its address was read from, as a reset checked them.
#[derive(Debug)]
pub(super) struct AddressCheck<'a> {
    /// The identifier, as read.
    pub(super) identifier: &'a str,
    /// The stored address, when the address is that one (the identifier is not an
    /// address); `None`: the identifier is the address.
    pub(super) email: Option<&'a str>,
}

/// A token to store.
pub(super) struct NewToken<'a> {
    pub(super) id: &'a str,
    pub(super) user_id: &'a str,
    pub(super) purpose: Purpose,
    pub(super) token_hash: &'a str,
    pub(super) address: &'a str,
    pub(super) now: i64,
    pub(super) expires_at: i64,
}

fn row_of(row: &impl Columns) -> Result<TokenRow> {
    Ok(TokenRow {
        id: row.col(ID)?,
        user_id: row.col(USER_ID)?,
        token_hash: row.col(TOKEN_HASH)?,
        address: row.col(ADDRESS)?,
    })
}

/// Live: not used, not expired.
fn live(now: i64) -> Expr {
    Expr::col(USED_AT)
        .is_null()
        .and(Expr::col(EXPIRES_AT).gt(now))
}

/// Marks a live token used.
fn consume_query(id: &str, now: i64) -> UpdateStatement {
    Query::update()
        .table(TOKENS)
        .value(USED_AT, now)
        .and_where(Expr::col(ID).eq(id))
        .and_where(live(now))
        .to_owned()
}

/// Deletes the user's rows that ended more than a day ago.
fn purge_query(t: &NewToken<'_>) -> DeleteStatement {
    Query::delete()
        .from_table(TOKENS)
        .and_where(Expr::col(USER_ID).eq(t.user_id))
        .and_where(Expr::col(EXPIRES_AT).lt(t.now - 86_400_000))
        .to_owned()
}

impl NewToken<'_> {
    /// The row's values, in the order of [`COLUMNS`].
    fn values(&self) -> [Expr; 9] {
        [
            Expr::val(self.id),
            Expr::val(self.user_id),
            Expr::val(self.purpose.as_str()),
            Expr::val(self.token_hash),
            Expr::val(self.address),
            Expr::val(0i64),
            Expr::val(self.expires_at),
            Expr::val(self.now),
            Expr::val(None::<i64>),
        ]
    }
}

pub(super) struct Tokens<'a>(pub(super) &'a Database);

impl Tokens<'_> {
    async fn fetch(&self, (sql, values): (String, SqlxValues)) -> Result<Option<TokenRow>> {
        let db = self.0;
        db.read(|| async {
            on_pool!(db, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
                row.as_ref().map(row_of).transpose()
            })
        })
        .await
    }

    /// Stores a new token; rows of the user that ended more than a day ago go first.
    pub(super) async fn insert(&self, t: &NewToken<'_>) -> Result<()> {
        self.0.exec(self.0.build(&purge_query(t))).await?;
        let stmt = Query::insert()
            .into_table(TOKENS)
            .columns(COLUMNS)
            .values(t.values())
            .map_err(SentriError::internal)?
            .to_owned();
        self.0.exec(self.0.build(&stmt)).await?;
        Ok(())
    }

    /// Stores a new token only while, for each `(since, max)` of `limits`, fewer than
    /// `max` tokens of its purpose were created for the user at that address after
    /// `since`; `false` (nothing stored) when a limit is reached or the user is gone.
    ///
    /// Atomic on every dialect: one transaction first locks the user's row (a no-op
    /// `UPDATE`), so concurrent callers for one account count and insert one after
    /// another, and the insert is a single `INSERT … SELECT … WHERE (count) < max` that
    /// stores nothing over the limit. Under PostgreSQL's read committed each statement
    /// sees the rows committed before the lock was granted; MySQL and SQLite serialise
    /// on the same lock.
    pub(super) async fn insert_within(
        &self,
        t: &NewToken<'_>,
        limits: &[(i64, u32)],
    ) -> Result<bool> {
        let db = self.0;
        let lock = Query::update()
            .table(USERS)
            .value(users::UPDATED_AT, Expr::col(users::UPDATED_AT))
            .and_where(Expr::col(users::ID).eq(t.user_id))
            .to_owned();
        let mut select = Query::select();
        select
            .exprs(t.values())
            .from(USERS)
            .and_where(Expr::col((USERS, users::ID)).eq(t.user_id));
        for &(since, max) in limits {
            let sent = Query::select()
                .expr(Func::count(Expr::col((TOKENS, ID))))
                .from(TOKENS)
                .and_where(Expr::col((TOKENS, USER_ID)).eq(t.user_id))
                .and_where(Expr::col((TOKENS, PURPOSE)).eq(t.purpose.as_str()))
                .and_where(Expr::col((TOKENS, ADDRESS)).eq(t.address))
                .and_where(Expr::col((TOKENS, CREATED_AT)).gt(since))
                .to_owned();
            select.and_where(Expr::SubQuery(None, Box::new(sent.into())).lt(i64::from(max)));
        }
        let insert = Query::insert()
            .into_table(TOKENS)
            .columns(COLUMNS)
            .select_from(select.to_owned())
            .map_err(SentriError::internal)?
            .to_owned();
        let steps = [
            Step {
                built: db.build(&lock),
                must_affect: false,
            },
            Step {
                built: db.build(&purge_query(t)),
                must_affect: false,
            },
            Step {
                built: db.build(&insert),
                must_affect: true,
            },
        ];
        Ok(db.steps(&steps, db_err).await? == StepsOutcome::Committed)
    }

    /// The live token of `purpose` with this hash, if any.
    pub(super) async fn live_by_hash(
        &self,
        purpose: Purpose,
        hash: &str,
        now: i64,
    ) -> Result<Option<TokenRow>> {
        let stmt = Query::select()
            .columns(COLUMNS)
            .from(TOKENS)
            .and_where(Expr::col(TOKEN_HASH).eq(hash))
            .and_where(Expr::col(PURPOSE).eq(purpose.as_str()))
            .and_where(live(now))
            .to_owned();
        self.fetch(self.0.build(&stmt)).await
    }

    /// The newest live token of `purpose` of the user, if any.
    pub(super) async fn newest_live(
        &self,
        purpose: Purpose,
        user_id: &str,
        now: i64,
    ) -> Result<Option<TokenRow>> {
        let stmt = Query::select()
            .columns(COLUMNS)
            .from(TOKENS)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(PURPOSE).eq(purpose.as_str()))
            .and_where(live(now))
            .order_by(CREATED_AT, Order::Desc)
            .order_by(ID, Order::Desc)
            .limit(1)
            .to_owned();
        self.fetch(self.0.build(&stmt)).await
    }

    /// Spends one attempt of a live token: `false` when it is used, expired or out of
    /// attempts (`max`). Atomic, so parallel guesses never get more than `max` tries.
    pub(super) async fn spend_attempt(&self, id: &str, max: u32, now: i64) -> Result<bool> {
        let stmt = Query::update()
            .table(TOKENS)
            .value(ATTEMPTS, Expr::col(ATTEMPTS).add(1))
            .and_where(Expr::col(ID).eq(id))
            .and_where(live(now))
            .and_where(Expr::col(ATTEMPTS).lt(i64::from(max)))
            .to_owned();
        self.0.exec_retrying(self.0.build(&stmt)).await
    }

    /// Spends an attempt of decoy row `slot` (a code check that found no live code):
    /// one row written, as a real attempt writes one.
    pub(super) async fn spend_decoy(&self, slot: u8) -> Result<()> {
        let stmt = Query::update()
            .table(DECOYS)
            .value(ATTEMPTS, Expr::col(ATTEMPTS).add(1))
            .and_where(Expr::col(ID).eq(i32::from(slot % DECOY_ROWS)))
            .to_owned();
        self.0.exec_retrying(self.0.build(&stmt)).await.map(|_| ())
    }

    /// Uses a live token: `true` for exactly one caller, whatever the concurrency.
    pub(super) async fn consume(&self, id: &str, now: i64) -> Result<bool> {
        self.0
            .exec_retrying(self.0.build(&consume_query(id, now)))
            .await
    }

    /// Ends every unused token of the user, whatever its purpose (`used_at` set, so it
    /// is refused like a used one), in one statement.
    pub(super) async fn end_all(&self, user_id: &str, now: i64) -> Result<()> {
        let stmt = Query::update()
            .table(TOKENS)
            .value(USED_AT, now)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(USED_AT).is_null())
            .to_owned();
        let step = [Step {
            built: self.0.build(&stmt),
            must_affect: false,
        }];
        self.0.steps(&step, db_err).await?;
        Ok(())
    }

    /// In one transaction: uses the token `id` (or changes nothing and answers `false`
    /// when another caller used it first), stores the new password hash, only while the
    /// account still has the address the token was sent to (`address` is what the
    /// caller read and checked: the identifier, and the stored `email` when the
    /// identifier is not an address; a change committed since answers `false` and
    /// changes nothing), and ends every other live token of `purposes` of the user.
    pub(super) async fn consume_and_set_password(
        &self,
        row: &TokenRow,
        address: &AddressCheck<'_>,
        password_hash: &str,
        purposes: &[Purpose],
        now: i64,
    ) -> Result<bool> {
        let db = self.0;
        let mut set_password = Query::update();
        set_password
            .table(USERS)
            .value(users::PASSWORD_HASH, password_hash)
            .value(users::UPDATED_AT, now)
            .and_where(Expr::col(users::ID).eq(row.user_id.as_str()))
            .and_where(Expr::col(users::IDENTIFIER).eq(address.identifier));
        if let Some(email) = address.email {
            set_password.and_where(Expr::col(users::EMAIL).eq(email));
        }
        let set_password = set_password.to_owned();
        let end_others = Query::update()
            .table(TOKENS)
            .value(USED_AT, now)
            .and_where(Expr::col(USER_ID).eq(row.user_id.as_str()))
            .and_where(Expr::col(PURPOSE).is_in(purposes.iter().map(|p| p.as_str())))
            .and_where(Expr::col(USED_AT).is_null())
            .to_owned();
        let steps = [
            Step {
                built: db.build(&consume_query(&row.id, now)),
                must_affect: true,
            },
            Step {
                built: db.build(&set_password),
                must_affect: true,
            },
            Step {
                built: db.build(&end_others),
                must_affect: false,
            },
        ];
        Ok(db.steps(&steps, db_err).await? == StepsOutcome::Committed)
    }
}

/// A live sign-up link (its hash only).
#[derive(Debug, Clone)]
pub(super) struct SignupRow {
    pub(super) id: String,
    pub(super) address: String,
}

/// The sign-up links table.
pub(super) struct Signups<'a>(pub(super) &'a Database);

impl Signups<'_> {
    /// Stores a sign-up link for `address`; rows that ended more than a day ago go
    /// first.
    pub(super) async fn insert(
        &self,
        id: &str,
        token_hash: &str,
        address: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let purge = Query::delete()
            .from_table(SIGNUPS)
            .and_where(Expr::col(EXPIRES_AT).lt(now - 86_400_000))
            .to_owned();
        self.0.exec(self.0.build(&purge)).await?;
        let stmt = Query::insert()
            .into_table(SIGNUPS)
            .columns([ID, TOKEN_HASH, ADDRESS, EXPIRES_AT, CREATED_AT, USED_AT])
            .values([
                Expr::val(id),
                Expr::val(token_hash),
                Expr::val(address),
                Expr::val(expires_at),
                Expr::val(now),
                Expr::val(None::<i64>),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        self.0.exec(self.0.build(&stmt)).await?;
        Ok(())
    }

    /// Uses the live sign-up link with this hash: its row for exactly one caller,
    /// whatever the concurrency (a conditional `UPDATE`), `None` for everyone else.
    pub(super) async fn consume(&self, hash: &str, now: i64) -> Result<Option<SignupRow>> {
        let db = self.0;
        let stmt = Query::select()
            .columns([ID, ADDRESS])
            .from(SIGNUPS)
            .and_where(Expr::col(TOKEN_HASH).eq(hash))
            .and_where(live(now))
            .to_owned();
        let (sql, values) = db.build(&stmt);
        let row = db
            .read(|| async {
                on_pool!(db, pool => {
                    let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                        .fetch_optional(pool)
                        .await
                        .map_err(db_err)?;
                    row.map(|row| {
                        Ok(SignupRow {
                            id: sqlx::Row::try_get(&row, ID).map_err(db_err)?,
                            address: sqlx::Row::try_get(&row, ADDRESS).map_err(db_err)?,
                        })
                    })
                    .transpose()
                })
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let used = Query::update()
            .table(SIGNUPS)
            .value(USED_AT, now)
            .and_where(Expr::col(ID).eq(row.id.as_str()))
            .and_where(live(now))
            .to_owned();
        Ok(db.exec_retrying(db.build(&used)).await?.then_some(row))
    }
}
