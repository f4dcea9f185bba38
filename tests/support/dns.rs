//! A small authoritative DNS server on 127.0.0.1 (UDP and TCP on one port) whose records a test
//! changes in-process: A, AAAA and SRV records with one TTL, NXDOMAIN for unknown names, and
//! switches to stop answering (a DNS outage) or to truncate every UDP answer (so the client
//! must ask again over TCP). Built on hickory-proto's message codec (imbang's resolver crate).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_resolver::Name;
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// One SRV record: `(priority, weight, port, target)`.
pub type Srv = (u16, u16, u16, &'static str);

#[derive(Default)]
struct Zone {
    addrs: HashMap<String, Vec<IpAddr>>,
    srv: HashMap<String, Vec<(u16, u16, u16, String)>>,
}

#[derive(Default)]
struct State {
    zone: Mutex<Zone>,
    ttl: AtomicUsize,
    down: AtomicBool,
    truncate: AtomicBool,
    udp_queries: AtomicUsize,
    tcp_queries: AtomicUsize,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl DnsServer {
    /// Serves on a free port of 127.0.0.1, records with a TTL of `ttl` seconds.
    pub async fn start(ttl: u32) -> Self {
        // UDP and TCP on the same port: try until both bind.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let state = Arc::new(State::default());
        state.ttl.store(ttl as usize, Ordering::SeqCst);
        let udp = Arc::new(udp);
        let s = state.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                s.udp_queries.fetch_add(1, Ordering::SeqCst);
                if s.down.load(Ordering::SeqCst) {
                    continue;
                }
                if let Some(answer) = answer(&s, &buf[..n], true) {
                    let _ = udp.send_to(&answer, from).await;
                }
            }
        });
        let s = state.clone();
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = stream.read_u16().await else {
                            return;
                        };
                        let mut query = vec![0u8; len as usize];
                        if stream.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        s.tcp_queries.fetch_add(1, Ordering::SeqCst);
                        if s.down.load(Ordering::SeqCst) {
                            return;
                        }
                        let Some(answer) = answer(&s, &query, false) else {
                            return;
                        };
                        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&answer);
                        if stream.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            state,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// Sets the addresses of `name` (A and AAAA records); none: the name does not exist.
    pub fn set(&self, name: &str, addrs: &[&str]) {
        let mut zone = self.state.zone.lock().unwrap();
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        if addrs.is_empty() {
            zone.addrs.remove(name);
        } else {
            zone.addrs.insert(name.to_owned(), addrs);
        }
    }

    /// Sets the SRV records of `name`.
    pub fn set_srv(&self, name: &str, records: &[Srv]) {
        let mut zone = self.state.zone.lock().unwrap();
        let records = (records.iter())
            .map(|&(p, w, port, t)| (p, w, port, t.to_owned()))
            .collect();
        zone.srv.insert(name.to_owned(), records);
    }

    /// Stops answering (queries are still counted) until called with false.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Answers over UDP with an empty, truncated message (the client must ask over TCP).
    pub fn set_truncate(&self, truncate: bool) {
        self.state.truncate.store(truncate, Ordering::SeqCst);
    }

    /// Queries received so far: `(udp, tcp)`.
    pub fn queries(&self) -> (usize, usize) {
        (
            self.state.udp_queries.load(Ordering::SeqCst),
            self.state.tcp_queries.load(Ordering::SeqCst),
        )
    }
}

fn answer(state: &State, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    reply.add_queries(query.queries().to_vec());
    if udp && state.truncate.load(Ordering::SeqCst) {
        reply.set_truncated(true);
        return reply.to_vec().ok();
    }
    let ttl = state.ttl.load(Ordering::SeqCst) as u32;
    let zone = state.zone.lock().unwrap();
    for q in query.queries() {
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let addrs = zone.addrs.get(&name);
        let srv = zone.srv.get(&name);
        if addrs.is_none() && srv.is_none() {
            reply.set_response_code(ResponseCode::NXDomain);
            continue;
        }
        let owner = q.name().clone();
        match q.query_type() {
            RecordType::A | RecordType::AAAA => {
                for ip in addrs.into_iter().flatten() {
                    let rdata = match (ip, q.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    reply.add_answer(Record::from_rdata(owner.clone(), ttl, rdata));
                }
            }
            RecordType::SRV => {
                for (p, w, port, target) in srv.into_iter().flatten() {
                    let target = Name::from_ascii(format!("{target}.")).unwrap();
                    let rdata = RData::SRV(SRV::new(*p, *w, *port, target));
                    reply.add_answer(Record::from_rdata(owner.clone(), ttl, rdata));
                }
            }
            _ => {}
        }
    }
    if reply.answers().is_empty() {
        // A negative answer carries the zone's SOA: its minimum is how long to keep it.
        let zone = Name::from_ascii("test.").unwrap();
        let soa = SOA::new(
            Name::from_ascii("ns.test.").unwrap(),
            Name::from_ascii("admin.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            ttl,
        );
        reply.add_name_server(Record::from_rdata(zone, ttl, RData::SOA(soa)));
    }
    reply.to_vec().ok()
}
