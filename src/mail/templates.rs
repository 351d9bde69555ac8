//! Message templates: a subject, a text and an HTML body with `{app}`, `{link}`,
//! `{code}` and `{minutes}` placeholders. Values are HTML-escaped in the HTML part.

/// The values a template is filled with.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct TemplateVars {
    /// The application's name.
    pub app: String,
    /// The link to follow (empty when the message carries a code).
    pub link: String,
    /// The code to type (empty when the message carries a link).
    pub code: String,
    /// Minutes until the link or code expires.
    pub minutes: u64,
}

impl std::fmt::Debug for TemplateVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateVars")
            .field("app", &self.app)
            .field("minutes", &self.minutes)
            .finish_non_exhaustive()
    }
}

impl TemplateVars {
    /// Values for `app`, valid for `minutes`.
    pub fn new(app: impl Into<String>, minutes: u64) -> Self {
        Self {
            app: app.into(),
            minutes,
            ..Self::default()
        }
    }

    /// Sets the link.
    pub fn link(mut self, link: impl Into<String>) -> Self {
        self.link = link.into();
        self
    }

    /// Sets the code.
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }
}

/// One message template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The subject (one line; placeholders allowed).
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

impl Template {
    /// A template from its three parts.
    pub fn new(
        subject: impl Into<String>,
        text: impl Into<String>,
        html: impl Into<String>,
    ) -> Self {
        Self {
            subject: subject.into(),
            text: text.into(),
            html: html.into(),
        }
    }

    /// `(subject, text, html)` filled with `vars`.
    pub fn render(&self, vars: &TemplateVars) -> (String, String, String) {
        let minutes = vars.minutes.to_string();
        let plain = |s: &str| {
            s.replace("{app}", &vars.app)
                .replace("{link}", &vars.link)
                .replace("{code}", &vars.code)
                .replace("{minutes}", &minutes)
        };
        let html = self
            .html
            .replace("{app}", &escape(&vars.app))
            .replace("{link}", &escape(&vars.link))
            .replace("{code}", &escape(&vars.code))
            .replace("{minutes}", &minutes);
        (plain(&self.subject), plain(&self.text), html)
    }
}

/// Escapes `& < > " '` for HTML text and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The templates of the account lifecycle; replace any field to change a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Templates {
    /// Email verification by link.
    pub verify_link: Template,
    /// Email verification by code.
    pub verify_code: Template,
    /// Password reset link.
    pub reset_password: Template,
    /// Sign-in link.
    pub magic_link: Template,
    /// Notice to the previous (verified) address after the account's address changed.
    pub address_changed: Template,
    /// Notice after a password reset (every credential of the account was ended).
    pub password_reset_notice: Template,
    /// Notice after a password change (every credential of the account was ended).
    pub password_changed_notice: Template,
    /// Notice after signing out everywhere, `logout-all` (every credential of the
    /// account was ended).
    pub logout_all_notice: Template,
}

impl Default for Templates {
    fn default() -> Self {
        Self {
            verify_link: Template::new(
                "Confirm your email address for {app}",
                "Confirm your email address for {app} by opening this link:\n\n{link}\n\nThe link expires in {minutes} minutes. If you did not sign up, ignore this message.\n",
                "<p>Confirm your email address for {app}:</p><p><a href=\"{link}\">Confirm my address</a></p><p>The link expires in {minutes} minutes. If you did not sign up, ignore this message.</p>",
            ),
            verify_code: Template::new(
                "Your {app} verification code",
                "Your {app} verification code is {code}\n\nIt expires in {minutes} minutes. If you did not sign up, ignore this message.\n",
                "<p>Your {app} verification code is <strong>{code}</strong></p><p>It expires in {minutes} minutes. If you did not sign up, ignore this message.</p>",
            ),
            reset_password: Template::new(
                "Reset your {app} password",
                "Someone asked to reset the password of your {app} account. To choose a new one, open:\n\n{link}\n\nThe link expires in {minutes} minutes. If it was not you, ignore this message: your password stays as it is.\n",
                "<p>Someone asked to reset the password of your {app} account.</p><p><a href=\"{link}\">Choose a new password</a></p><p>The link expires in {minutes} minutes. If it was not you, ignore this message: your password stays as it is.</p>",
            ),
            magic_link: Template::new(
                "Your {app} sign-in link",
                "Sign in to {app} by opening this link:\n\n{link}\n\nThe link works once and expires in {minutes} minutes. If you did not ask for it, ignore this message.\n",
                "<p><a href=\"{link}\">Sign in to {app}</a></p><p>The link works once and expires in {minutes} minutes. If you did not ask for it, ignore this message.</p>",
            ),
            address_changed: Template::new(
                "Your {app} email address was changed",
                "The email address of your {app} account was changed, and this address no longer receives its messages. If you did not do this, contact support at once.\n",
                "<p>The email address of your {app} account was changed, and this address no longer receives its messages.</p><p>If you did not do this, contact support at once.</p>",
            ),
            password_reset_notice: Template::new(
                "Your {app} password was reset",
                "The password of your {app} account was reset. Every device was signed out, and links sent to you before no longer work. If you did not do this, reset your password again at once and contact support.\n",
                "<p>The password of your {app} account was reset. Every device was signed out, and links sent to you before no longer work.</p><p>If you did not do this, reset your password again at once and contact support.</p>",
            ),
            password_changed_notice: Template::new(
                "Your {app} password was changed",
                "The password of your {app} account was changed. Every device was signed out, and links sent to you before no longer work. If you did not do this, reset your password at once and contact support.\n",
                "<p>The password of your {app} account was changed. Every device was signed out, and links sent to you before no longer work.</p><p>If you did not do this, reset your password at once and contact support.</p>",
            ),
            logout_all_notice: Template::new(
                "You were signed out of {app} everywhere",
                "Your {app} account was signed out on every device, and links sent to you before no longer work. If you did not do this, reset your password at once and contact support.\n",
                "<p>Your {app} account was signed out on every device, and links sent to you before no longer work.</p><p>If you did not do this, reset your password at once and contact support.</p>",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_values_are_escaped() {
        let t = Template::new("{app}", "{link}", "<a href=\"{link}\">{app}</a>");
        let vars = TemplateVars::new("A<b>&\"", 5).link("https://x.test/?a=1&b=\"2\"");
        let (subject, text, html) = t.render(&vars);
        assert_eq!(subject, "A<b>&\"");
        assert_eq!(text, "https://x.test/?a=1&b=\"2\"");
        assert_eq!(
            html,
            "<a href=\"https://x.test/?a=1&amp;b=&quot;2&quot;\">A&lt;b&gt;&amp;&quot;</a>"
        );
    }
}
