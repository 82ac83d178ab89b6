//! Job ends pushed to the daemon: the `HPC_PUSH_ADDRESS` setting and the
//! lines of the batch script that send the end.
//!
//! With the setting, the script runs the job's command in a subshell
//! (`(exec -- argv...)`, so the command is still an `exec`ed program) and an
//! `EXIT` trap sends one UDP datagram, `hpc-host-end <job id>\n`, to the
//! address: the daemon that submitted the job listens there and polls slurm
//! at once instead of at its next interval. The datagram is a hint with no
//! authority (the daemon believes only slurm), so the trap is best effort:
//!
//! - the address is an IP address and a port, checked here and by the host:
//!   no name to resolve, so the send never waits for DNS; a UDP send to an
//!   address nobody listens on, or that a firewall drops, returns at once;
//! - every error of the send is discarded, and the job's exit status stays
//!   the command's: a command killed by a signal kills the script with the
//!   same signal after the send, so slurm still records the signal;
//! - bash's `/dev/udp` needs no program on the compute node.
//!
//! ```
//! use hpc_plugin_slurm::push::{parse_address, trap_lines};
//!
//! let addr = parse_address("10.1.2.3:7878").unwrap();
//! assert!(trap_lines(addr).contains(">'/dev/udp/10.1.2.3/7878'"));
//! assert!(parse_address("login1:7878").is_err()); // a name: resolving it could stall the job's end
//! assert!(parse_address("10.1.2.3:7878; rm -rf ~").is_err());
//! ```

use std::net::{IpAddr, SocketAddr};

use crate::quote::bash_quote;

/// Setting: where the daemon listens for job ends (`IP:PORT`, `[IPv6]:PORT`).
pub const SETTING_PUSH: &str = "HPC_PUSH_ADDRESS";

/// What the datagram starts with; the job id follows.
pub const MESSAGE_PREFIX: &str = "hpc-host-end ";

/// The address in `HPC_PUSH_ADDRESS`, checked: an IP address (not
/// unspecified, multicast or broadcast) and a port other than 0.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let bad = |why: &str| {
        format!(
            "the `{SETTING_PUSH}` setting must be an IP address and a port (`10.0.0.5:7878`, `[fd00::5]:7878`), not `{}`: {why}",
            text.escape_debug()
        )
    };
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| bad("not an address and port (a host name is not accepted: resolving it could hold up every job's end)"))?;
    if addr.port() == 0 {
        return Err(bad("port 0"));
    }
    let ip = addr.ip();
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(bad("jobs must reach one listening daemon"));
    }
    if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        return Err(bad("jobs must reach one listening daemon"));
    }
    Ok(addr)
}

/// The script lines that install the trap; the command comes after them
/// as [`command_line`].
pub fn trap_lines(addr: SocketAddr) -> String {
    // Built from the parsed address, never from the setting's text, and
    // quoted all the same. bash's `/dev/udp/HOST/PORT` takes an IPv6
    // address without brackets.
    let path = bash_quote(&format!("/dev/udp/{}/{}", addr.ip(), addr.port()));
    format!(
        concat!(
            "# Tell the daemon that submitted this job that its command has ended: a\n",
            "# hint that only makes it ask slurm now. Errors are ignored; the exit\n",
            "# status (or the signal) stays the command's.\n",
            "hpc_host_ended() {{\n",
            "  local status=$? id=${{SLURM_ARRAY_JOB_ID:+${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}}}\n",
            "  {{ printf '{prefix}%s\\n' \"${{id:-$SLURM_JOB_ID}}\" >{path}; }} 2>/dev/null\n",
            "  if ((status > 128 && status < 193)); then trap - EXIT; kill -s \"$((status - 128))\" \"$$\"; fi\n",
            "}}\n",
            "trap hpc_host_ended EXIT\n",
        ),
        prefix = MESSAGE_PREFIX,
        path = path,
    )
}

/// The line that runs the (already quoted) command words under the trap:
/// `exec`ed in a subshell, so the script lives on to send the end. bash's
/// own report of a command killed by a signal (`Killed`) goes to
/// `/dev/null`; the command's standard error is the job's.
pub fn command_line(quoted_words: &str) -> String {
    format!("{{ (exec --{quoted_words} 2>&3 3>&-); }} 3>&2 2>/dev/null\n")
}
