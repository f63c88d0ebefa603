//! What a freshly initdb'd cluster gets before anyone may use it: the superuser's password, the
//! replication role, the application role and database, and the roles and databases of the
//! spec. Pure: the SQL to run, one statement a batch; the agent runs them in order.

use crate::api::cluster::{DatabaseSpec, RoleSpec};

/// The application role and its database (`<c>-app`), when the spec asks for one.
pub struct AppObjects<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub password: &'a str,
}

pub struct BootstrapObjects<'a> {
    pub superuser_password: &'a str,
    pub replication_user: &'a str,
    pub replication_password: &'a str,
    pub app: Option<AppObjects<'a>>,
    pub roles: &'a [RoleSpec],
    pub databases: &'a [DatabaseSpec],
}

/// The statements, in order. Each is its own batch: CREATE DATABASE cannot run inside the
/// implicit transaction of a multi-statement batch.
pub fn statements(o: &BootstrapObjects<'_>) -> Vec<String> {
    let mut statements = vec![
        format!(
            "ALTER ROLE postgres PASSWORD {}",
            scram_literal(o.superuser_password)
        ),
        format!(
            "CREATE ROLE {} WITH REPLICATION LOGIN PASSWORD {}",
            ident(o.replication_user),
            scram_literal(o.replication_password)
        ),
    ];
    if let Some(app) = &o.app {
        statements.push(format!(
            "CREATE ROLE {} WITH LOGIN PASSWORD {}",
            ident(app.user),
            scram_literal(app.password)
        ));
        statements.push(format!(
            "CREATE DATABASE {} OWNER {}",
            ident(app.database),
            ident(app.user)
        ));
    }
    for role in o.roles {
        statements.push(format!(
            "CREATE ROLE {} WITH {} {}",
            ident(&role.name),
            if role.login { "LOGIN" } else { "NOLOGIN" },
            if role.createdb {
                "CREATEDB"
            } else {
                "NOCREATEDB"
            },
        ));
    }
    for db in o.databases {
        statements.push(format!(
            "CREATE DATABASE {} OWNER {}",
            ident(&db.name),
            ident(&db.owner)
        ));
    }
    statements
}

/// For a cluster restored from another's backup (`spec.bootstrap.recovery`): the roles are the
/// source's, so the superuser, the replication role and the application role get this
/// cluster's passwords (created when the source lacks them); nothing else changes. Each
/// statement is its own batch, as for [`statements`].
pub fn recovered_statements(o: &BootstrapObjects<'_>) -> Vec<String> {
    let ensure = |role: &str, options: &str, password: &str| {
        [
            format!(
                "DO $pgwarden$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) \
                 THEN CREATE ROLE {}; END IF; END $pgwarden$",
                postgres_protocol::escape::escape_literal(role),
                ident(role)
            ),
            format!(
                "ALTER ROLE {} WITH {options} PASSWORD {}",
                ident(role),
                scram_literal(password)
            ),
        ]
    };
    let mut out = vec![format!(
        "ALTER ROLE postgres PASSWORD {}",
        scram_literal(o.superuser_password)
    )];
    out.extend(ensure(
        o.replication_user,
        "REPLICATION LOGIN",
        o.replication_password,
    ));
    if let Some(app) = &o.app {
        out.extend(ensure(app.user, "LOGIN", app.password));
    }
    out
}

fn ident(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

/// A password as a SCRAM verifier literal: the plain text never reaches the server's logs.
fn scram_literal(password: &str) -> String {
    postgres_protocol::escape::escape_literal(&postgres_protocol::password::scram_sha_256(
        password.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects<'a>(roles: &'a [RoleSpec], databases: &'a [DatabaseSpec]) -> BootstrapObjects<'a> {
        BootstrapObjects {
            superuser_password: "su-secret",
            replication_user: "standby",
            replication_password: "repl-secret",
            app: Some(AppObjects {
                user: "app",
                database: "app db",
                password: "app-secret",
            }),
            roles,
            databases,
        }
    }

    #[test]
    fn passwords_go_in_as_scram_verifiers_never_in_plain_text() {
        let sql = statements(&objects(&[], &[])).join("\n");
        for secret in ["su-secret", "repl-secret", "app-secret"] {
            assert!(!sql.contains(secret), "{secret} in {sql}");
        }
        assert_eq!(sql.matches("SCRAM-SHA-256$").count(), 3);
    }

    #[test]
    fn statements_in_order_one_create_database_each() {
        let roles = [RoleSpec {
            name: "reporting".into(),
            login: false,
            createdb: true,
        }];
        let dbs = [DatabaseSpec {
            name: "metrics".into(),
            owner: "reporting".into(),
        }];
        let s = statements(&objects(&roles, &dbs));
        let heads: Vec<&str> = s
            .iter()
            .map(|q| q.split(" PASSWORD").next().unwrap_or(q))
            .collect();
        assert_eq!(
            heads,
            [
                "ALTER ROLE postgres",
                "CREATE ROLE \"standby\" WITH REPLICATION LOGIN",
                "CREATE ROLE \"app\" WITH LOGIN",
                "CREATE DATABASE \"app db\" OWNER \"app\"",
                "CREATE ROLE \"reporting\" WITH NOLOGIN CREATEDB",
                "CREATE DATABASE \"metrics\" OWNER \"reporting\"",
            ]
        );
    }

    #[test]
    fn a_restored_cluster_gets_its_own_passwords_on_the_sources_roles() {
        let s = recovered_statements(&objects(&[], &[]));
        let sql = s.join("\n");
        for secret in ["su-secret", "repl-secret", "app-secret"] {
            assert!(!sql.contains(secret), "{secret} in {sql}");
        }
        assert_eq!(s.len(), 5);
        assert!(s[1].contains("rolname = 'standby'") && s[1].contains("CREATE ROLE \"standby\""));
        assert!(s[2].starts_with("ALTER ROLE \"standby\" WITH REPLICATION LOGIN PASSWORD"));
        assert!(s[4].starts_with("ALTER ROLE \"app\" WITH LOGIN PASSWORD"));
        assert!(!sql.contains("CREATE DATABASE"), "the data is the source's");
    }

    #[test]
    fn without_an_app_secret_no_app_role_or_database() {
        let mut o = objects(&[], &[]);
        o.app = None;
        assert_eq!(statements(&o).len(), 2);
    }
}
