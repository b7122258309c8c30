//! `user`, `role` and `auth` commands, and reading passwords as etcdctl does: `Password: `
//! prompts on stdout with the terminal's echo off (etcdctl runs `stty -echo` on its stdin, so
//! off a terminal stty's complaint shows on stderr, here too), or one word from stdin with
//! `--interactive=false`.

use std::io::{BufRead, Read};

use clap::Subcommand;

use super::print::out;
use super::{connect, CtlError, Global, EXIT_BAD_ARGS, EXIT_ERROR};
use crate::client::ClientError;
use crate::proto::authpb::{self, permission};
use crate::proto::etcdserverpb as pb;

/// Go's `strconv.ParseBool`, for pflag's boolean flags (`--interactive=false`).
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {s:?}: invalid syntax")),
    }
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Adds a new user
    Add {
        /// Read password from stdin instead of interactive terminal
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
              default_value = "true", action = clap::ArgAction::Set, value_parser = go_bool)]
        interactive: bool,
        /// Supply password from the command line flag
        #[arg(long, default_value = "")]
        new_user_password: String,
        /// Create a user without password (CN based auth only)
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
              default_value = "false", action = clap::ArgAction::Set, value_parser = go_bool)]
        no_password: bool,
        /// <user name or user:password>
        args: Vec<String>,
    },
    /// Deletes a user
    Delete {
        /// <user name>
        args: Vec<String>,
    },
    /// Gets detailed information of a user
    Get {
        /// Show permissions of roles granted to the user
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
              default_value = "false", action = clap::ArgAction::Set, value_parser = go_bool)]
        detail: bool,
        /// <user name>
        args: Vec<String>,
    },
    /// Lists all users
    List { args: Vec<String> },
    /// Changes password of user
    Passwd {
        /// If true, read password from stdin instead of interactive terminal
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
              default_value = "true", action = clap::ArgAction::Set, value_parser = go_bool)]
        interactive: bool,
        /// <user name>
        args: Vec<String>,
    },
    /// Grants a role to a user
    GrantRole {
        /// <user name> <role name>
        args: Vec<String>,
    },
    /// Revokes a role from a user
    RevokeRole {
        /// <user name> <role name>
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoleCmd {
    /// Adds a new role
    Add {
        /// <role name>
        args: Vec<String>,
    },
    /// Deletes a role
    Delete {
        /// <role name>
        args: Vec<String>,
    },
    /// Gets detailed information of a role
    Get {
        /// <role name>
        args: Vec<String>,
    },
    /// Lists all roles
    List { args: Vec<String> },
    /// Grants a key to a role
    GrantPermission {
        /// grant a prefix permission
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
              default_value = "false", action = clap::ArgAction::Set, value_parser = go_bool)]
        prefix: bool,
        /// grant a permission of keys that are greater than or equal to the given key using
        /// byte compare
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
              default_value = "false", action = clap::ArgAction::Set, value_parser = go_bool)]
        from_key: bool,
        /// <role name> <permission type> <key> [endkey]
        args: Vec<String>,
    },
    /// Revokes a key from a role
    RevokePermission {
        /// revoke a prefix permission
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
              default_value = "false", action = clap::ArgAction::Set, value_parser = go_bool)]
        prefix: bool,
        /// revoke a permission of keys that are greater than or equal to the given key using
        /// byte compare
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
              default_value = "false", action = clap::ArgAction::Set, value_parser = go_bool)]
        from_key: bool,
        /// <role name> <key> [endkey]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// Enables authentication
    Enable { args: Vec<String> },
    /// Disables authentication
    Disable { args: Vec<String> },
}

fn bad_args(msg: impl Into<String>) -> CtlError {
    CtlError::new(EXIT_BAD_ARGS, msg)
}

/// user and role calls end with `ExitError` when they fail.
fn failed(e: ClientError) -> CtlError {
    CtlError::new(EXIT_ERROR, e.to_string())
}

// ---- reading passwords -----------------------------------------------------------------------

/// Runs `stty <arg>` on our stdin, as etcdctl's password prompt (speakeasy) does; stty says on
/// stderr when stdin is not a terminal, and that is all that happens then.
fn stty(arg: &str) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("/bin/stty")
        .arg0("stty")
        .arg(arg)
        .status()
        .map(|_| ())
}

/// Asks for a password: the prompt on stdout, one line of stdin read with echo off (trimmed),
/// then a newline on stdout.
pub fn ask_password(prompt: &str) -> Result<String, String> {
    out(prompt);
    stty("-echo")
        .map_err(|e| format!("failed turning off console echo for password entry:\n\t{e}"))?;
    let mut line = Vec::new();
    let read = std::io::stdin().lock().read_until(b'\n', &mut line);
    let _ = stty("echo");
    out("\n");
    read.map_err(|e| format!("failed during password entry: {e}"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).trim().to_string())
}

/// Go's `fmt.Scanf("%s", &password)` on stdin: one word; nothing if the line (or stdin) ends
/// first.
fn scan_word() -> String {
    let stdin = std::io::stdin();
    let mut bytes = stdin.lock().bytes().map_while(Result::ok);
    let mut word = Vec::new();
    for b in bytes.by_ref() {
        match b {
            b'\n' => return String::new(),
            b' ' | b'\t' | b'\r' | 0x0b | 0x0c => continue,
            b => {
                word.push(b);
                break;
            }
        }
    }
    if word.is_empty() {
        return String::new();
    }
    for b in bytes {
        if b.is_ascii_whitespace() || b == 0x0b {
            break;
        }
        word.push(b);
    }
    String::from_utf8_lossy(&word).into_owned()
}

/// etcdctl's readPasswordInteractive: asked twice, must be the same and not empty.
fn read_password_interactive(name: &str) -> Result<String, CtlError> {
    let ask = |prompt: String| {
        ask_password(&prompt).map_err(|e| bad_args(format!("failed to ask password: {e}")))
    };
    let first = ask(format!("Password of {name}: "))?;
    if first.is_empty() {
        return Err(bad_args("empty password"));
    }
    let second = ask(format!("Type password of {name} again for confirmation: "))?;
    if first != second {
        return Err(bad_args("given passwords are different"));
    }
    Ok(first)
}

fn read_password(name: &str, interactive: bool) -> Result<String, CtlError> {
    if interactive {
        read_password_interactive(name)
    } else {
        Ok(scan_word())
    }
}

// ---- user ------------------------------------------------------------------------------------

pub async fn user(g: &Global, cmd: UserCmd) -> Result<(), CtlError> {
    match cmd {
        UserCmd::Add {
            interactive,
            new_user_password,
            no_password,
            args,
        } => {
            let [arg] = &args[..] else {
                return Err(bad_args(
                    "user add command requires user name as its argument",
                ));
            };
            let (name, password) = if no_password {
                (arg.clone(), String::new())
            } else if !new_user_password.is_empty() {
                (arg.clone(), new_user_password)
            } else {
                match arg.split_once(':') {
                    None => (arg.clone(), read_password(arg, interactive)?),
                    Some(("", _)) => return Err(bad_args("empty user name is not allowed")),
                    Some((user, password)) => (user.to_string(), password.to_string()),
                }
            };
            let printer = g.printer()?;
            let client = connect(g).await?;
            let req = pb::AuthUserAddRequest {
                name: name.clone(),
                password,
                options: Some(authpb::UserAddOptions { no_password }),
            };
            let resp = client.user_add(req).await.map_err(failed)?;
            printer.user_add(&name, &resp)
        }
        UserCmd::Delete { args } => {
            let [name] = &args[..] else {
                return Err(bad_args(
                    "user delete command requires user name as its argument",
                ));
            };
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.user_delete(name).await.map_err(failed)?;
            printer.user_delete(name, &resp)
        }
        UserCmd::Get { detail, args } => {
            let [name] = &args[..] else {
                return Err(bad_args(
                    "user get command requires user name as its argument",
                ));
            };
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.user_get(name).await.map_err(failed)?;
            if !detail {
                return printer.user_get(name, &resp);
            }
            out(&format!("User: {name}\n"));
            for role in &resp.roles {
                out("\n");
                let r = client.role_get(role).await.map_err(failed)?;
                printer.role_get(role, &r)?;
            }
            Ok(())
        }
        UserCmd::List { args } => {
            if !args.is_empty() {
                return Err(bad_args("user list command requires no arguments"));
            }
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.user_list().await.map_err(failed)?;
            printer.user_list(&resp)
        }
        UserCmd::Passwd { interactive, args } => {
            let [name] = &args[..] else {
                return Err(bad_args(
                    "user passwd command requires user name as its argument",
                ));
            };
            let password = read_password(name, interactive)?;
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client
                .user_change_password(name, &password)
                .await
                .map_err(failed)?;
            printer.user_change_password(&resp)
        }
        UserCmd::GrantRole { args } => {
            let [user, role] = &args[..] else {
                return Err(bad_args(
                    "user grant command requires user name and role name as its argument",
                ));
            };
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.user_grant_role(user, role).await.map_err(failed)?;
            printer.user_grant_role(user, role, &resp)
        }
        UserCmd::RevokeRole { args } => {
            let [user, role] = &args[..] else {
                return Err(bad_args(
                    "user revoke-role requires user name and role name as its argument",
                ));
            };
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.user_revoke_role(user, role).await.map_err(failed)?;
            printer.user_revoke_role(user, role, &resp)
        }
    }
}

// ---- role ------------------------------------------------------------------------------------

/// clientv3's StrToPermissionType.
fn permission_type(s: &str) -> Result<permission::Type, CtlError> {
    permission::Type::from_str_name(&s.to_uppercase())
        .ok_or_else(|| bad_args(format!("invalid permission type: {s}")))
}

const PREFIX_AND_FROM_KEY: &str = "--from-key and --prefix flags are mutually exclusive";

/// etcdctl's permRange: the key and range end of `args` (a key and maybe an end key) under
/// --prefix or --from-key. An empty key means every key.
fn perm_range(
    args: &[String],
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), CtlError> {
    let key = args[0].as_bytes();
    if key.is_empty() {
        if prefix && from_key {
            return Err(bad_args(PREFIX_AND_FROM_KEY));
        }
        // A range permission is an affine interval: the empty prefix is ["\x00", <end>).
        let end = if prefix || from_key {
            vec![0]
        } else {
            Vec::new()
        };
        return Ok((vec![0], end));
    }
    let end = match (&args[1..], prefix, from_key) {
        ([], true, true) => return Err(bad_args(PREFIX_AND_FROM_KEY)),
        ([], true, false) => crate::client::prefix_range_end(key),
        ([], false, true) => vec![0],
        ([], false, false) => Vec::new(),
        (_, true, _) => return Err(bad_args("unexpected endkey argument with --prefix flag")),
        (_, _, true) => return Err(bad_args("unexpected endkey argument with --from-key flag")),
        ([end, ..], false, false) => end.as_bytes().to_vec(),
    };
    Ok((key.to_vec(), end))
}

pub async fn role(g: &Global, cmd: RoleCmd) -> Result<(), CtlError> {
    match cmd {
        RoleCmd::Add { args } => {
            let [name] = &args[..] else {
                return Err(bad_args(
                    "role add command requires role name as its argument",
                ));
            };
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.role_add(name).await.map_err(failed)?;
            printer.role_add(name, &resp)
        }
        RoleCmd::Delete { args } => {
            let [name] = &args[..] else {
                return Err(bad_args(
                    "role delete command requires role name as its argument",
                ));
            };
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.role_delete(name).await.map_err(failed)?;
            printer.role_delete(name, &resp)
        }
        RoleCmd::Get { args } => {
            let [name] = &args[..] else {
                return Err(bad_args(
                    "role get command requires role name as its argument",
                ));
            };
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.role_get(name).await.map_err(failed)?;
            printer.role_get(name, &resp)
        }
        RoleCmd::List { args } => {
            if !args.is_empty() {
                return Err(bad_args("role list command requires no arguments"));
            }
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.role_list().await.map_err(failed)?;
            printer.role_list(&resp)
        }
        RoleCmd::GrantPermission {
            prefix,
            from_key,
            args,
        } => {
            if args.len() < 3 {
                return Err(bad_args(
                    "role grant command requires role name, permission type, and key [endkey] as its argument",
                ));
            }
            let perm_type = permission_type(&args[1])?;
            let (key, range_end) = perm_range(&args[2..], prefix, from_key)?;
            let printer = g.printer()?;
            let client = connect(g).await?;
            let perm = authpb::Permission {
                perm_type: perm_type as i32,
                key: key.into(),
                range_end: range_end.into(),
            };
            let resp = client
                .role_grant_permission(&args[0], perm)
                .await
                .map_err(failed)?;
            printer.role_grant_permission(&args[0], &resp)
        }
        RoleCmd::RevokePermission {
            prefix,
            from_key,
            args,
        } => {
            if args.len() < 2 {
                return Err(bad_args(
                    "role revoke-permission command requires role name and key [endkey] as its argument",
                ));
            }
            let (key, range_end) = perm_range(&args[1..], prefix, from_key)?;
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client
                .role_revoke_permission(&args[0], &key, &range_end)
                .await
                .map_err(failed)?;
            printer.role_revoke_permission(&args[0], &args[1], &range_end, &resp)
        }
    }
}

// ---- auth ------------------------------------------------------------------------------------

pub async fn auth(g: &Global, cmd: AuthCmd) -> Result<(), CtlError> {
    match cmd {
        AuthCmd::Enable { args } => {
            if !args.is_empty() {
                return Err(bad_args(
                    "auth enable command does not accept any arguments",
                ));
            }
            g.printer()?;
            let client = connect(g).await?;
            // As etcdctl: a root user without the root role gets it (the role made first).
            loop {
                match client.auth_enable().await {
                    Ok(_) => break,
                    Err(e)
                        if e.status().is_some_and(|s| {
                            s.message == "etcdserver: root user does not have root role"
                        }) =>
                    {
                        client.role_add("root").await.map_err(failed)?;
                        client
                            .user_grant_role("root", "root")
                            .await
                            .map_err(failed)?;
                    }
                    Err(e) => return Err(failed(e)),
                }
            }
            out("Authentication Enabled\n");
            Ok(())
        }
        AuthCmd::Disable { args } => {
            if !args.is_empty() {
                return Err(bad_args(
                    "auth disable command does not accept any arguments",
                ));
            }
            g.printer()?;
            let client = connect(g).await?;
            client.auth_disable().await.map_err(failed)?;
            out("Authentication Disabled\n");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(args: &[&str], prefix: bool, from_key: bool) -> Result<(Vec<u8>, Vec<u8>), String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        perm_range(&args, prefix, from_key).map_err(|e| e.msg.unwrap_or_default())
    }

    #[test]
    fn permission_ranges_as_etcdctl() {
        assert_eq!(range(&["k"], false, false), Ok((b"k".to_vec(), vec![])));
        assert_eq!(
            range(&["k", "m"], false, false),
            Ok((b"k".to_vec(), b"m".to_vec()))
        );
        assert_eq!(
            range(&["k", "m", "z"], false, false),
            Ok((b"k".to_vec(), b"m".to_vec()))
        );
        assert_eq!(
            range(&["ab"], true, false),
            Ok((b"ab".to_vec(), b"ac".to_vec()))
        );
        assert_eq!(range(&["k"], false, true), Ok((b"k".to_vec(), vec![0])));
        assert_eq!(range(&[""], false, false), Ok((vec![0], vec![])));
        assert_eq!(range(&["", "x"], false, false), Ok((vec![0], vec![])));
        assert_eq!(range(&[""], true, false), Ok((vec![0], vec![0])));
        assert_eq!(range(&[""], false, true), Ok((vec![0], vec![0])));
        assert_eq!(range(&[""], true, true), Err(PREFIX_AND_FROM_KEY.into()));
        assert_eq!(range(&["k"], true, true), Err(PREFIX_AND_FROM_KEY.into()));
        assert_eq!(
            range(&["k", "m"], true, false),
            Err("unexpected endkey argument with --prefix flag".into())
        );
        assert_eq!(
            range(&["k", "m"], true, true),
            Err("unexpected endkey argument with --prefix flag".into())
        );
        assert_eq!(
            range(&["k", "m"], false, true),
            Err("unexpected endkey argument with --from-key flag".into())
        );
    }

    #[test]
    fn permission_types_and_bools() {
        assert_eq!(
            permission_type("readWrite").unwrap(),
            permission::Type::Readwrite
        );
        assert_eq!(
            permission_type("bogus").unwrap_err().msg.unwrap(),
            "invalid permission type: bogus"
        );
        assert_eq!(go_bool("F"), Ok(false));
        assert!(go_bool("no").is_err());
    }
}
