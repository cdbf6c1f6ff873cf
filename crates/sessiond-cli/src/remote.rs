//! `sessiond remote …`: a remote client on the command line (see `sessiond-client`).

use std::io::BufRead;

use anyhow::Context;
use serde_json::Value;
use sessiond_client::{ClientConfig, RemoteClient};
use sessiond_core::SessionId;

use crate::cli::{RemoteArgs, RemoteCommand};

/// Runs one `sessiond remote` command.
pub fn run(args: RemoteArgs, password: String) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let config = ClientConfig::new(&args.url, &args.user, &password);
        let mut client = match &args.persistent_id {
            Some(p) => {
                let p: SessionId = p
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--persistent-id: 32 hexadecimal digits"))?;
                RemoteClient::resume(config, p).await
            }
            None => RemoteClient::connect(config).await,
        }
        .with_context(|| format!("cannot open a remote session at {}", args.url))?;
        eprintln!(
            "session {} persistentID {}",
            client.id(),
            client.persistent_id()
        );
        match args.command {
            RemoteCommand::Call {
                function,
                params,
                keep,
            } => {
                // The session ends (or is kept) whatever the call answered: a failed
                // call must not leave a postponed session behind.
                let answer = call(&client, &function, params.as_deref()).await;
                if keep {
                    client.disconnect();
                } else if let Err(e) = client.goodbye().await {
                    eprintln!("sessiond: the goodbye failed: {e}");
                }
                println!("{}", answer?);
            }
            RemoteCommand::Sleep => client.sleep().await?,
            RemoteCommand::Shell => shell(client).await?,
        }
        Ok(())
    })
}

async fn call(
    client: &RemoteClient,
    function: &str,
    params: Option<&str>,
) -> anyhow::Result<String> {
    let params: Value = match params {
        Some(p) => serde_json::from_str(p).context("the parameters are not JSON")?,
        None => Value::Null,
    };
    let value = client.call(function, params).await?;
    Ok(serde_json::to_string(&value)?)
}

/// The interactive client: one command per line of standard input (after the
/// password, when it is read there); answers on standard output.
async fn shell(mut client: RemoteClient) -> anyhow::Result<()> {
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let line = line.trim();
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let outcome = match command {
            "" => continue,
            "call" => {
                let (function, params) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
                let params = Some(params.trim()).filter(|p| !p.is_empty());
                call(&client, function, params).await
            }
            "sleep" => client
                .sleep()
                .await
                .map(|()| "sleeping".into())
                .map_err(Into::into),
            "wake" | "reconnect" => client
                .reconnect()
                .await
                .map(|resumed| format!("resumed {resumed} session {}", client.id()))
                .map_err(Into::into),
            "drop" => {
                client.disconnect();
                Ok("connection dropped".into())
            }
            "info" => Ok(client.info().to_string()),
            "bye" => {
                client.goodbye().await?;
                println!("goodbye");
                return Ok(());
            }
            other => Err(anyhow::anyhow!(
                "unknown command {other:?}: call NAME [JSON] | sleep | wake | drop | reconnect | info | bye"
            )),
        };
        match outcome {
            Ok(text) => println!("{text}"),
            Err(e) => println!("error: {e:#}"),
        }
    }
    eprintln!(
        "standard input ended without `bye`: the session stays postponed; resume it with --persistent-id {}",
        client.persistent_id()
    );
    Ok(())
}
