//! PostgreSQL's settings as this agent runs it: the flags' parameters overlaid with the
//! operator's dynamic configuration, the extra pg_hba lines, `synchronous_standby_names` and the
//! replication source. One place renders them (`settings`) and one place rewrites and reloads
//! (`Postgres::reconfigure`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::config::AgentArgs;
use super::dcs::Snapshot;
use super::postgres::conf::{InitdbOptions, PrimaryConninfo, ServerSettings, slot_name};
use super::{Agent, AgentError, Upstream};
use crate::api::member::url_host_port;
use crate::api::state::DynamicConfig;

/// What PostgreSQL is configured with, beyond the fixed flags.
pub struct Reconfigure {
    /// Parameters from the flags; the operator's dynamic `config` key overrides them.
    base_parameters: BTreeMap<String, String>,
    /// What postgres runs with now: the flags' parameters overlaid with the dynamic config.
    parameters: BTreeMap<String, String>,
    /// Extra pg_hba.conf lines from the dynamic config.
    hba_extra: Vec<String>,
    /// pg_hba.conf rejects every client over TCP (see `routing`).
    pub clients_fenced: bool,
    /// Fingerprint of the dynamic configuration taken up (published in the member status).
    pub applied_config: Option<String>,
    /// A configuration reloaded but not yet published, and when: `pending_restart` is read
    /// from PostgreSQL before the reload is processed, so the fingerprint waits for a later
    /// cycle's reading.
    reloaded_config: Option<(String, Instant)>,
    /// What this primary last wrote into synchronous_standby_names.
    pub synchronous_standby_names: Option<String>,
    /// This primary's flush position right after synchronous_standby_names last changed (a
    /// standby is published only once it flushed that far); `None` until read.
    pub synchronous_since: Option<u64>,
    pub passfile: PathBuf,
}

impl Reconfigure {
    pub fn new(parameters: BTreeMap<String, String>, passfile: PathBuf) -> Self {
        Self {
            base_parameters: parameters.clone(),
            parameters,
            hba_extra: vec![],
            clients_fenced: false,
            applied_config: None,
            reloaded_config: None,
            synchronous_standby_names: None,
            synchronous_since: None,
            passfile,
        }
    }

    /// Everything `pgwarden.conf` and `pg_hba.conf` are rendered from.
    pub fn settings(&self, args: &AgentArgs, conninfo: Option<PrimaryConninfo>) -> ServerSettings {
        ServerSettings {
            listen_address: args.address.clone(),
            port: args.pg_port,
            socket_dir: args.run_dir.to_string_lossy().into_owned(),
            passfile: self.passfile.to_string_lossy().into_owned(),
            replication_user: args.replication_user.clone(),
            primary_conninfo: conninfo,
            synchronous_standby_names: self.synchronous_standby_names.clone(),
            parameters: self.parameters.clone(),
            pg_hba: self.hba_extra.clone(),
            clients_fenced: self.clients_fenced,
            initdb: InitdbOptions {
                encoding: args.initdb_encoding.clone(),
                locale: args.initdb_locale.clone(),
                data_checksums: args.initdb_data_checksums,
            },
        }
    }
}

/// The replication source for following `leader`, from its published `conn_url`.
pub fn conninfo_for(snap: Option<&Snapshot>, leader: &str, me: &str) -> Option<PrimaryConninfo> {
    let status = snap?
        .members
        .iter()
        .find(|(n, _)| n == leader)
        .map(|(_, s)| s)?;
    let (host, port) = url_host_port(&status.conn_url)?;
    Some(PrimaryConninfo {
        host,
        port,
        application_name: me.to_string(),
        slot: slot_name(me),
    })
}

impl Agent {
    pub(super) fn settings(&self, conninfo: Option<PrimaryConninfo>) -> ServerSettings {
        self.conf.settings(&self.args, conninfo)
    }

    pub(super) fn conninfo_for(
        &self,
        snap: Option<&Snapshot>,
        leader: &str,
    ) -> Option<PrimaryConninfo> {
        conninfo_for(snap, leader, &self.args.name)
    }

    /// Rewrite the configuration files and reload, keeping the current replication source.
    pub(super) async fn reload(&mut self) -> Result<(), AgentError> {
        let conninfo = match &self.upstream {
            Upstream::Member(leader) => {
                let snap = self.dcs.read().await.ok();
                self.conninfo_for(snap.as_ref(), leader)
            }
            _ => None,
        };
        let settings = self.settings(conninfo);
        self.pg.reconfigure(&settings).await?;
        Ok(())
    }

    /// Take up the operator's dynamic configuration: new parameters and pg_hba lines are written
    /// and reloaded at once; restart-only parameters then show as `pending_restart`.
    pub(super) async fn apply_dynamic_config(&mut self, config: &DynamicConfig) {
        let c = &mut self.conf;
        let mut parameters = c.base_parameters.clone();
        parameters.extend(config.parameters.clone());
        let fingerprint = config.fingerprint();
        if parameters == c.parameters && config.pg_hba == c.hba_extra {
            // This cycle's reading of PostgreSQL (taken before this call) is at least a second
            // younger than the reload: its pending_restart describes the new configuration.
            match &c.reloaded_config {
                Some((fp, at)) if *fp == fingerprint && at.elapsed() < Duration::from_secs(1) => {}
                _ => {
                    c.reloaded_config = None;
                    c.applied_config = Some(fingerprint);
                }
            }
            return;
        }
        c.parameters = parameters;
        c.hba_extra = config.pg_hba.clone();
        info!(parameters = ?c.parameters, pg_hba = ?c.hba_extra, "dynamic configuration changed");
        if self.pg.running()
            && let Err(e) = self.reload().await
        {
            warn!(error = %e, "cannot apply the dynamic configuration");
            return;
        }
        if self.pg.running() {
            self.conf.reloaded_config = Some((fingerprint, Instant::now()));
        } else {
            // Not running: it starts with this configuration.
            self.conf.applied_config = Some(fingerprint);
        }
    }
}
