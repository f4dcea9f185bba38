//! nginx's realip module (`ngx_http_realip_module`): `set_real_ip_from`, `real_ip_header`,
//! `real_ip_recursive`, read at http, server and location level and merged as nginx merges them
//! (each of the three on its own: a level without `set_real_ip_from` keeps its parent's list).
//! The runtime is `crate::realip`.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;

use super::{Directive, Frame, Lower};
use crate::config::model::{RealIp, RealIpHeader, network};

impl Frame {
    /// The merged settings, or `None` when no `set_real_ip_from` applies (the module is off).
    pub(super) fn realip(&self) -> Option<Arc<RealIp>> {
        let from = self.realip_from.clone()?;
        Some(Arc::new(RealIp {
            from,
            header: self.realip_header.clone().unwrap_or(RealIpHeader::XRealIp),
            recursive: self.realip_recursive.unwrap_or(false),
        }))
    }
}

impl Lower<'_> {
    /// `set_real_ip_from address | CIDR | unix: | hostname`: the trusted networks it adds (a
    /// host name: each address it resolves to, at start, as nginx).
    pub(super) fn real_ip_from(&mut self, d: &Directive) -> Vec<(IpAddr, u8)> {
        let arg = &d.args[0];
        let text = arg.value.as_str();
        if text == "unix:" {
            // imbang listens on no Unix sockets: trusting their clients trusts nobody.
            return Vec::new();
        }
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match bits {
                None => Some(max),
                Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
                    b.parse::<u8>().ok().filter(|&n| n <= max)
                }
                Some(_) => None,
            };
            if let Some(prefix) = prefix {
                let net = network(ip, prefix);
                if net != ip {
                    self.warn(
                        format!("low address bits of {text} are meaningless"),
                        arg.span,
                    );
                }
                return vec![(net, prefix)];
            }
        }
        let resolved: Vec<(IpAddr, u8)> = match (text, 0u16).to_socket_addrs() {
            Ok(addrs) => addrs
                .map(|a| (a.ip(), if a.is_ipv4() { 32 } else { 128 }))
                .collect(),
            Err(_) => Vec::new(),
        };
        if resolved.is_empty() {
            self.invalid(
                format!("host not found in set_real_ip_from \"{text}\""),
                arg.span,
            );
        }
        resolved
    }

    /// `real_ip_header X-Real-IP | X-Forwarded-For | proxy_protocol | field`: the first three
    /// spelled exactly so, as nginx compares them; any other text names a field (without regard
    /// to case).
    pub(super) fn real_ip_header(&mut self, d: &Directive) -> RealIpHeader {
        let arg = &d.args[0];
        match arg.value.as_str() {
            "X-Real-IP" => RealIpHeader::XRealIp,
            "X-Forwarded-For" => RealIpHeader::XForwardedFor,
            "proxy_protocol" => RealIpHeader::ProxyProtocol,
            other => RealIpHeader::Other(other.to_ascii_lowercase()),
        }
    }
}
