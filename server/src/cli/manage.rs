//! Sub-commands that manage tenants, users, tokens and ACLs in the data dir.

use std::io::Read;

use anyhow::Context;
use clap::Subcommand;

use super::Location;
use crate::auth::AuthService;

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user; the password is read from stdin, or generated and printed when stdin is empty.
    Add {
        /// User id, e.g. alice@pbs.
        userid: String,
        /// Tenant the user belongs to (default: the config's only tenant, or `default`).
        #[arg(long)]
        tenant: Option<String>,
        /// Server operator: sees and manages every tenant.
        #[arg(long)]
        superuser: bool,
        /// Free text shown in the user list.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Set a user's password (read from stdin, or generated and printed when stdin is empty).
    Passwd { userid: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create an API token (e.g. alice@pbs!backup) and print its secret once.
    Add { tokenid: String },
}

#[derive(Debug, Subcommand)]
pub enum TenantAction {
    /// Create a tenant.
    Add {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AclAction {
    /// Grant `role` on `path` (`/` or `/datastore/<store>[/<ns>...]`) to a user or token.
    Add {
        path: String,
        authid: String,
        role: String,
    },
}

fn open_auth(
    location: &Location,
) -> anyhow::Result<(AuthService, crate::config::Config, std::path::PathBuf)> {
    let (config, data_dir) = location.resolve()?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("unable to create data dir {}", data_dir.display()))?;
    let auth = AuthService::open(
        &data_dir.join("auth"),
        super::config_apply::auth_seed_for(&config),
    )
    .context("unable to load users and tokens")?;
    Ok((auth, config, data_dir))
}

/// Reads a secret from stdin (first line), or generates one when stdin is empty or a terminal.
fn password_from_stdin() -> anyhow::Result<(String, bool)> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        if let Some(line) = text.lines().next().filter(|l| !l.is_empty()) {
            return Ok((line.to_string(), false));
        }
    }
    Ok((crate::auth::generate_secret()?, true))
}

pub fn user(location: &Location, action: UserAction) -> anyhow::Result<()> {
    let (auth, config, data_dir) = open_auth(location)?;
    match action {
        UserAction::Add {
            userid,
            tenant,
            superuser,
            comment,
        } => {
            let tenant = tenant.unwrap_or_else(|| config.default_tenant());
            auth.ensure_tenant(&tenant, None)?;
            let (password, generated) = password_from_stdin()?;
            auth.add_user(&userid, &tenant, &password, superuser)?;
            if comment.is_some() {
                auth.set_user_comment(&userid, comment.as_deref())?;
            }
            println!("added user {userid} (tenant {tenant})");
            if generated {
                println!("password: {password}");
            }
        }
        UserAction::Passwd { userid } => {
            let (password, generated) = password_from_stdin()?;
            auth.set_password(&userid, &password)?;
            if userid == super::serve::DEFAULT_ADMIN {
                let _ = std::fs::remove_file(data_dir.join(super::serve::INITIAL_PASSWORD_FILE));
            }
            println!("password of {userid} changed");
            if generated {
                println!("password: {password}");
            }
        }
    }
    Ok(())
}

pub fn token(location: &Location, action: TokenAction) -> anyhow::Result<()> {
    let (auth, _, _) = open_auth(location)?;
    match action {
        TokenAction::Add { tokenid } => {
            let secret = auth.add_token(&tokenid)?;
            println!("added token {tokenid}");
            println!("secret: {secret}");
        }
    }
    Ok(())
}

pub fn tenant(location: &Location, action: TenantAction) -> anyhow::Result<()> {
    let (auth, _, _) = open_auth(location)?;
    match action {
        TenantAction::Add { id, comment } => {
            auth.ensure_tenant(&id, comment.as_deref())?;
            println!("tenant {id} exists");
        }
    }
    Ok(())
}

pub fn acl(location: &Location, action: AclAction) -> anyhow::Result<()> {
    let (auth, _, _) = open_auth(location)?;
    match action {
        AclAction::Add { path, authid, role } => {
            auth.add_acl(&path, &authid, &role)?;
            println!("granted {role} on {path} to {authid}");
        }
    }
    Ok(())
}

pub fn hash_password_from_stdin() -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let password = text.lines().next().unwrap_or_default();
    anyhow::ensure!(!password.is_empty(), "no password on stdin");
    println!("{}", crate::auth::hash_password(password)?);
    Ok(())
}
