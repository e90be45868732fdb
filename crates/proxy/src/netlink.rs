//! The per-Service commands sent to the kernel as one nf_tables netlink batch, without the
//! `nft` program: no process to start, no script to parse in C, no cache of the whole table to
//! fetch first. A one-endpoint change then costs a few hundred bytes and one syscall.
//!
//! A [`Transaction`] is written straight from the proxier's chains, rules and elements (the
//! full sync: no script text in between), or from a script of per-Service commands (the
//! partial syncs, whose scripts are small). Only the closed grammar the proxier writes (`add
//! chain`, `add rule` with the matches and statements of [`crate::rules`], `add element`, ...)
//! is understood; anything else is [`NetlinkError::Unsupported`], and the caller hands the
//! script to `nft` instead. The table's fixed part (base chains with their hooks, fib, ct,
//! reject, masquerade) is always loaded by `nft`.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("open netlink socket in network namespace {netns}: {source}")]
    Open {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// A line this encoder does not know: the script must go to `nft` instead.
    #[error("not encodable as netlink: {0}")]
    Unsupported(String),
    #[error("kernel rejected the transaction: {0}")]
    Rejected(String),
}

impl From<Errno> for NetlinkError {
    fn from(e: Errno) -> Self {
        NetlinkError::Io(e.into())
    }
}

// linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_REG32_00: u32 = 8;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
/// nft's datatype numbers, kept in the set so that `nft list` prints it well.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;

/// Messages are built into one buffer; each remembers what it says, for error messages.
struct Batch {
    buf: Vec<u8>,
    /// (sequence number, command) of each message.
    lines: Vec<(u32, String)>,
    seq: u32,
}

impl Batch {
    fn new(seq: u32, capacity: usize) -> Batch {
        let mut b = Batch {
            buf: Vec::with_capacity(capacity.max(1 << 12)),
            lines: Vec::new(),
            seq,
        };
        let at = b.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0);
        b.end(at);
        b
    }

    /// Start a message: header and nfgenmsg; returns its offset for [`Batch::end`].
    fn begin(&mut self, kind: u16, flags: u16, family: u8) -> usize {
        let at = self.buf.len();
        let (msg_type, res_id) = if (NFNL_MSG_BATCH_BEGIN..=NFNL_MSG_BATCH_END).contains(&kind) {
            (kind, NFNL_SUBSYS_NFTABLES)
        } else {
            ((NFNL_SUBSYS_NFTABLES << 8) | kind, 0)
        };
        self.seq = self.seq.wrapping_add(1);
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&msg_type.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn command(&mut self, kind: u16, flags: u16, what: String) -> usize {
        let at = self.begin(kind, NLM_F_REQUEST | flags, NFPROTO_INET);
        self.lines.push((self.seq, what));
        at
    }

    /// Forget a message begun at `at` (it could not be encoded).
    fn abandon(&mut self, at: usize) {
        self.buf.truncate(at);
        self.lines.pop();
    }

    fn finish(mut self) -> (Vec<u8>, Vec<(u32, String)>) {
        let at = self.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0);
        self.end(at);
        (self.buf, self.lines)
    }
}

/// Attribute writing on a byte buffer.
trait Attrs {
    fn attr(&mut self, kind: u16, data: &[u8]);
    fn nest_begin(&mut self, kind: u16) -> usize;
    fn nest_end(&mut self, at: usize);
    fn str_attr(&mut self, kind: u16, s: &str) {
        let mut d = Vec::with_capacity(s.len() + 1);
        d.extend_from_slice(s.as_bytes());
        d.push(0);
        self.attr(kind, &d);
    }
    fn u32_attr(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }
}

impl Attrs for Vec<u8> {
    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.extend_from_slice(&(len as u16).to_ne_bytes());
        self.extend_from_slice(&kind.to_ne_bytes());
        self.extend_from_slice(data);
        self.resize(self.len() + (4 - len % 4) % 4, 0);
    }
    fn nest_begin(&mut self, kind: u16) -> usize {
        let at = self.len();
        self.extend_from_slice(&0u16.to_ne_bytes());
        self.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }
    fn nest_end(&mut self, at: usize) {
        let len = (self.len() - at) as u16;
        self[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// One nf_tables expression: its name and its attributes.
struct Expr {
    name: &'static str,
    attrs: Vec<u8>,
}

impl Expr {
    fn new(name: &'static str) -> Expr {
        Expr {
            name,
            attrs: Vec::new(),
        }
    }
    fn u32(mut self, kind: u16, v: u32) -> Expr {
        self.attrs.u32_attr(kind, v);
        self
    }
    fn str(mut self, kind: u16, s: &str) -> Expr {
        self.attrs.str_attr(kind, s);
        self
    }
    /// A nested NFTA_DATA_VALUE.
    fn value(mut self, kind: u16, v: &[u8]) -> Expr {
        let at = self.attrs.nest_begin(kind);
        self.attrs.attr(1, v);
        self.attrs.nest_end(at);
        self
    }
}

fn meta_load(key: u32) -> Expr {
    // NFTA_META_DREG, NFTA_META_KEY
    Expr::new("meta").u32(1, NFT_REG_1).u32(2, key)
}

fn cmp(op_neq: bool, data: &[u8]) -> Expr {
    // NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA
    Expr::new("cmp")
        .u32(1, NFT_REG_1)
        .u32(2, u32::from(op_neq))
        .value(3, data)
}

fn payload(base: u32, offset: u32, len: u32) -> Expr {
    // NFTA_PAYLOAD_DREG, _BASE (1 network, 2 transport), _OFFSET, _LEN
    Expr::new("payload")
        .u32(1, NFT_REG_1)
        .u32(2, base)
        .u32(3, offset)
        .u32(4, len)
}

fn verdict(code: i32, chain: Option<&str>) -> Expr {
    let mut e = Expr::new("immediate").u32(1, NFT_REG_VERDICT);
    let data = e.attrs.nest_begin(2); // NFTA_IMMEDIATE_DATA
    let v = e.attrs.nest_begin(2); // NFTA_DATA_VERDICT
    e.attrs.u32_attr(1, code as u32); // NFTA_VERDICT_CODE
    if let Some(c) = chain {
        e.attrs.str_attr(2, c); // NFTA_VERDICT_CHAIN
    }
    e.attrs.nest_end(v);
    e.attrs.nest_end(data);
    e
}

fn immediate(reg: u32, data: &[u8]) -> Expr {
    Expr::new("immediate").u32(1, reg).value(2, data)
}

const META_L4PROTO: u32 = 16;
const META_NFPROTO: u32 = 15;

fn proto_number(p: &str) -> Option<u8> {
    match p {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        _ => None,
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `addr:port` or `[addr]:port`.
fn parse_addr_port(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.rsplit_once(':')?;
    let a = a.trim_start_matches('[').trim_end_matches(']');
    Some((a.parse().ok()?, p.parse().ok()?))
}

fn family_of(word: &str) -> Option<(u8, u32)> {
    match word {
        "ip" => Some((NFPROTO_IPV4, 4)),
        "ip6" => Some((NFPROTO_IPV6, 16)),
        _ => None,
    }
}

/// A rule's text as expressions, for the forms [`crate::rules`] and the proxier write.
fn rule_exprs(rule: &str) -> Option<Vec<Expr>> {
    let t: Vec<&str> = rule.split_whitespace().collect();
    let mut out = Vec::new();
    let mut nfproto: Option<u8> = None;
    let mut i = 0;
    let mut need_family = |out: &mut Vec<Expr>, f: u8| {
        if nfproto != Some(f) {
            out.push(meta_load(META_NFPROTO));
            out.push(cmp(false, &[f]));
            nfproto = Some(f);
        }
    };
    while i < t.len() {
        match t[i] {
            "meta" if t.get(i + 1) == Some(&"l4proto") => {
                let p = proto_number(t.get(i + 2)?)?;
                out.push(meta_load(META_L4PROTO));
                out.push(cmp(false, &[p]));
                i += 3;
            }
            w @ ("ip" | "ip6") => {
                let (f, alen) = family_of(w)?;
                let offset = match (*t.get(i + 1)?, f) {
                    ("saddr", NFPROTO_IPV4) => 12,
                    ("daddr", NFPROTO_IPV4) => 16,
                    ("saddr", _) => 8,
                    ("daddr", _) => 24,
                    _ => return None,
                };
                let mut j = i + 2;
                let neq = t.get(j) == Some(&"!=");
                if neq {
                    j += 1;
                }
                let v = *t.get(j)?;
                need_family(&mut out, f);
                if let Some(set) = v.strip_prefix('@') {
                    out.push(payload(1, offset, alen));
                    // NFTA_LOOKUP_SET, _SREG, _FLAGS (1: inverted)
                    let mut e = Expr::new("lookup").str(1, set).u32(2, NFT_REG_1);
                    if neq {
                        e = e.u32(5, 1);
                    }
                    out.push(e);
                } else {
                    let (addr, bits) = match v.split_once('/') {
                        Some((a, b)) => (a.parse::<IpAddr>().ok()?, b.parse::<u32>().ok()?),
                        None => (v.parse::<IpAddr>().ok()?, alen * 8),
                    };
                    if ip_bytes(&addr).len() as u32 != alen || bits > alen * 8 {
                        return None;
                    }
                    // As nft: whole bytes of a prefix are compared as they are, other
                    // prefixes through a mask over the whole address.
                    let bytes = if bits % 8 == 0 { bits / 8 } else { alen };
                    if bytes > 0 {
                        let mut want = ip_bytes(&addr);
                        want.truncate(bytes as usize);
                        out.push(payload(1, offset, bytes));
                        if bits % 8 != 0 {
                            let mask: Vec<u8> = (0..bytes)
                                .map(|i| match bits.saturating_sub(i * 8) {
                                    0 => 0,
                                    b if b >= 8 => 0xff,
                                    b => 0xffu8 << (8 - b),
                                })
                                .collect();
                            for (w, m) in want.iter_mut().zip(&mask) {
                                *w &= m;
                            }
                            // NFTA_BITWISE_SREG, _DREG, _LEN, _MASK, _XOR
                            out.push(
                                Expr::new("bitwise")
                                    .u32(1, NFT_REG_1)
                                    .u32(2, NFT_REG_1)
                                    .u32(3, bytes)
                                    .value(4, &mask)
                                    .value(5, &vec![0u8; bytes as usize]),
                            );
                        }
                        out.push(cmp(neq, &want));
                    } else if neq {
                        // nothing is outside /0
                        return None;
                    }
                }
                i = j + 1;
            }
            p @ ("tcp" | "udp" | "sctp") if t.get(i + 1) == Some(&"dport") => {
                let port: u16 = t.get(i + 2)?.parse().ok()?;
                out.push(meta_load(META_L4PROTO));
                out.push(cmp(false, &[proto_number(p)?]));
                out.push(payload(2, 2, 2));
                out.push(cmp(false, &port.to_be_bytes()));
                i += 3;
            }
            "fib" => {
                if t.get(i + 1..i + 4)? != ["saddr", "type", "local"] {
                    return None;
                }
                // NFTA_FIB_DREG, _RESULT (3: address type), _FLAGS (1: saddr); RTN_LOCAL
                out.push(Expr::new("fib").u32(1, NFT_REG_1).u32(2, 3).u32(3, 1));
                out.push(cmp(false, &2u32.to_ne_bytes()));
                i += 4;
            }
            "numgen" => {
                // numgen random mod N == V
                if t.get(i + 1) != Some(&"random") || t.get(i + 2) != Some(&"mod") {
                    return None;
                }
                let n: u32 = t.get(i + 3)?.parse().ok()?;
                if t.get(i + 4) != Some(&"==") {
                    return None;
                }
                let v: u32 = t.get(i + 5)?.parse().ok()?;
                // NFTA_NG_DREG, _MODULUS, _TYPE (1: random)
                out.push(Expr::new("numgen").u32(1, NFT_REG_1).u32(2, n).u32(3, 1));
                out.push(cmp(false, &v.to_ne_bytes()));
                i += 6;
            }
            "jump" | "goto" => {
                let code = if t[i] == "jump" { NFT_JUMP } else { NFT_GOTO };
                out.push(verdict(code, Some(t.get(i + 1)?)));
                i += 2;
            }
            "drop" => {
                out.push(verdict(NF_DROP, None));
                i += 1;
            }
            "accept" => {
                out.push(verdict(NF_ACCEPT, None));
                i += 1;
            }
            "return" => {
                out.push(verdict(NFT_RETURN, None));
                i += 1;
            }
            "update" => {
                // update @set { ip saddr }
                let set = t.get(i + 1)?.strip_prefix('@')?;
                if t.get(i + 2) != Some(&"{") || t.get(i + 4) != Some(&"saddr") {
                    return None;
                }
                if t.get(i + 5) != Some(&"}") {
                    return None;
                }
                let (f, alen) = family_of(t.get(i + 3)?)?;
                need_family(&mut out, f);
                out.push(payload(1, if f == NFPROTO_IPV4 { 12 } else { 8 }, alen));
                // NFTA_DYNSET_SET_NAME, _OP (1: update), _SREG_KEY
                out.push(Expr::new("dynset").str(1, set).u32(3, 1).u32(4, NFT_REG_1));
                i += 6;
            }
            "dnat" => {
                let (f, alen) = family_of(t.get(i + 1)?)?;
                if t.get(i + 2) != Some(&"to") {
                    return None;
                }
                // NFTA_NAT_TYPE (1: dnat), _FAMILY, _REG_ADDR_MIN, _REG_PROTO_MIN, _FLAGS
                // (2: proto specified)
                let nat = |proto_reg: u32| {
                    Expr::new("nat")
                        .u32(1, 1)
                        .u32(2, u32::from(f))
                        .u32(3, NFT_REG_1)
                        .u32(5, proto_reg)
                        .u32(7, 2)
                };
                if t.get(i + 3) == Some(&"numgen") {
                    // dnat ip to numgen random mod N offset B map @set
                    if t.get(i + 4..i + 6)? != ["random", "mod"]
                        || t.get(i + 7) != Some(&"offset")
                        || t.get(i + 9) != Some(&"map")
                    {
                        return None;
                    }
                    let n: u32 = t.get(i + 6)?.parse().ok()?;
                    let offset: u32 = t.get(i + 8)?.parse().ok()?;
                    let set = t.get(i + 10)?.strip_prefix('@')?;
                    out.push(
                        Expr::new("numgen")
                            .u32(1, NFT_REG_1)
                            .u32(2, n)
                            .u32(3, 1)
                            .u32(4, offset),
                    );
                    // NFTA_LOOKUP_SET, _SREG, _DREG: the address, then the port in the next
                    // 32-bit register
                    out.push(
                        Expr::new("lookup")
                            .str(1, set)
                            .u32(2, NFT_REG_1)
                            .u32(3, NFT_REG_1),
                    );
                    out.push(nat(NFT_REG32_00 + alen / 4));
                    i += 11;
                } else {
                    let (addr, port) = parse_addr_port(t.get(i + 3)?)?;
                    if ip_bytes(&addr).len() as u32 != alen {
                        return None;
                    }
                    out.push(immediate(NFT_REG_1, &ip_bytes(&addr)));
                    out.push(immediate(NFT_REG_2, &port.to_be_bytes()));
                    out.push(nat(NFT_REG_2));
                    i += 4;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// An element's key or data as an attribute of type `kind`: fields joined by ` . `, each
/// padded to 4 bytes when there are several. Numbers are ports, but in `endpoint-slots` keys,
/// where they are slots. Written straight into `buf`; nothing is written when a field is not
/// understood.
fn fields_attr(buf: &mut Vec<u8>, kind: u16, text: &str, numbers_are_slots: bool) -> Option<()> {
    let at = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    let concat = text.contains(" . ");
    for f in text.split(" . ").map(str::trim) {
        let start = buf.len();
        if let Ok(ip) = f.parse::<IpAddr>() {
            match ip {
                IpAddr::V4(a) => buf.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => buf.extend_from_slice(&a.octets()),
            }
        } else if let Some(p) = proto_number(f) {
            buf.push(p);
        } else if numbers_are_slots && let Ok(n) = f.parse::<u32>() {
            buf.extend_from_slice(&n.to_ne_bytes());
        } else if let Ok(port) = f.parse::<u16>() {
            buf.extend_from_slice(&port.to_be_bytes());
        } else {
            buf.truncate(at);
            return None;
        }
        if concat {
            let len = buf.len() - start;
            buf.resize(start + len.div_ceil(4) * 4, 0);
        }
    }
    let len = buf.len() - at;
    buf[at..at + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    buf.resize(at + len.div_ceil(4) * 4, 0);
    Some(())
}

#[cfg(test)]
fn encode_fields(text: &str, numbers_are_slots: bool) -> Option<Vec<u8>> {
    let mut b = Vec::new();
    fields_attr(&mut b, 1, text, numbers_are_slots)?;
    let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
    Some(b[4..len].to_vec())
}

fn is_slot_map(set: &str) -> bool {
    set.starts_with("endpoint-slots")
}

/// `{ a, b : goto x }` → the items.
fn braces(s: &str) -> Option<Vec<&str>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    Some(inner.split(", ").map(str::trim).collect())
}

/// `key` or `key : value` → its parts.
fn split_item(item: &str) -> (&str, Option<&str>) {
    match item.split_once(" : ") {
        Some((k, v)) => (k, Some(v)),
        None => (item, None),
    }
}

/// One element as an NFTA_LIST_ELEM; nothing is written when it is not understood.
fn element(buf: &mut Vec<u8>, slots: bool, key: &str, value: Option<&str>) -> Option<()> {
    let at = buf.len();
    let written = element_attrs(buf, slots, key, value);
    if written.is_none() {
        buf.truncate(at);
    }
    written
}

fn element_attrs(buf: &mut Vec<u8>, slots: bool, key: &str, value: Option<&str>) -> Option<()> {
    let at = buf.nest_begin(1); // NFTA_LIST_ELEM
    let k = buf.nest_begin(1); // NFTA_SET_ELEM_KEY
    fields_attr(buf, 1, key, slots)?; // NFTA_DATA_VALUE
    buf.nest_end(k);
    if let Some(v) = value {
        let d = buf.nest_begin(2); // NFTA_SET_ELEM_DATA
        let mut words = v.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(kind @ ("goto" | "jump")), Some(chain), None) => {
                let vd = buf.nest_begin(2); // NFTA_DATA_VERDICT
                buf.u32_attr(1, (if kind == "goto" { NFT_GOTO } else { NFT_JUMP }) as u32);
                buf.str_attr(2, chain);
                buf.nest_end(vd);
            }
            (Some(code @ ("drop" | "accept")), None, None) => {
                let vd = buf.nest_begin(2);
                buf.u32_attr(1, (if code == "drop" { NF_DROP } else { NF_ACCEPT }) as u32);
                buf.nest_end(vd);
            }
            _ => fields_attr(buf, 1, v, false)?,
        }
        buf.nest_end(d);
    }
    buf.nest_end(at);
    Some(())
}

/// `type ipv4_addr ; flags dynamic,timeout ; timeout 300s ;` of an affinity set.
fn set_declaration(buf: &mut Vec<u8>, decl: &str, id: u32) -> Option<()> {
    let mut flags = 0;
    for part in decl.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (word, rest) = part.split_once(' ')?;
        match word {
            "type" => {
                let (ty, len) = match rest.trim() {
                    "ipv4_addr" => (TYPE_IPADDR, 4),
                    "ipv6_addr" => (TYPE_IP6ADDR, 16),
                    _ => return None,
                };
                buf.u32_attr(4, ty); // NFTA_SET_KEY_TYPE
                buf.u32_attr(5, len); // NFTA_SET_KEY_LEN
            }
            "flags" => {
                for f in rest.split(',').map(str::trim) {
                    flags |= match f {
                        "dynamic" => NFT_SET_EVAL,
                        "timeout" => NFT_SET_TIMEOUT,
                        _ => return None,
                    };
                }
            }
            "timeout" => {
                let secs: u64 = rest.trim().strip_suffix('s')?.parse().ok()?;
                buf.attr(11, &(secs * 1000).to_be_bytes()); // NFTA_SET_TIMEOUT, ms
            }
            _ => return None,
        }
    }
    buf.u32_attr(3, flags); // NFTA_SET_FLAGS
    buf.u32_attr(10, id); // NFTA_SET_ID
    Some(())
}

/// Elements per message: the kernel takes at most 64 KiB per netlink attribute.
const ELEMENTS_PER_MESSAGE: usize = 256;

/// One transaction of per-Service commands on `inet <table>`, written as nf_tables messages
/// straight from the proxier's chains, rules and elements: no script text in between.
pub struct Transaction {
    batch: Batch,
    table: String,
    set_id: u32,
}

impl Transaction {
    pub fn new(table: &str) -> Transaction {
        Transaction::with_capacity(table, 0)
    }

    /// A transaction whose messages are expected to take about `bytes`.
    pub fn with_capacity(table: &str, bytes: usize) -> Transaction {
        Transaction {
            batch: Batch::new(0, bytes),
            table: table.to_string(),
            set_id: 0,
        }
    }

    /// Whether no command was written.
    pub fn is_empty(&self) -> bool {
        self.batch.lines.is_empty()
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.batch.buf.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.batch.buf
    }

    fn chain_command(&mut self, kind: u16, flags: u16, verb: &str, name: &str) {
        let what = format!("{verb} chain inet {} {name}", self.table);
        let at = self.batch.command(kind, flags, what);
        let buf = &mut self.batch.buf;
        buf.str_attr(1, &self.table); // NFTA_CHAIN_TABLE / NFTA_RULE_TABLE
        // NFTA_CHAIN_NAME; NFTA_RULE_CHAIN for a flush
        buf.str_attr(if kind == NFT_MSG_DELRULE { 2 } else { 3 }, name);
        self.batch.end(at);
    }

    pub fn add_chain(&mut self, name: &str) {
        self.chain_command(NFT_MSG_NEWCHAIN, NLM_F_CREATE, "add", name);
    }

    /// Remove every rule of a chain.
    pub fn flush_chain(&mut self, name: &str) {
        self.chain_command(NFT_MSG_DELRULE, 0, "flush", name);
    }

    pub fn delete_chain(&mut self, name: &str) {
        self.chain_command(NFT_MSG_DELCHAIN, 0, "delete", name);
    }

    /// Append a rule (in the forms [`crate::rules`] and the proxier write) to a chain.
    pub fn add_rule(&mut self, chain: &str, rule: &str) -> Result<(), NetlinkError> {
        let exprs = rule_exprs(rule).ok_or_else(|| NetlinkError::Unsupported(rule.into()))?;
        let what = format!("add rule inet {} {chain} {rule}", self.table);
        let at = self
            .batch
            .command(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, what);
        let buf = &mut self.batch.buf;
        buf.str_attr(1, &self.table); // NFTA_RULE_TABLE
        buf.str_attr(2, chain); // NFTA_RULE_CHAIN
        let list = buf.nest_begin(4); // NFTA_RULE_EXPRESSIONS
        for e in exprs {
            let el = buf.nest_begin(1); // NFTA_LIST_ELEM
            buf.str_attr(1, e.name); // NFTA_EXPR_NAME
            let d = buf.nest_begin(2); // NFTA_EXPR_DATA
            buf.extend_from_slice(&e.attrs);
            buf.nest_end(d);
            buf.nest_end(el);
        }
        buf.nest_end(list);
        self.batch.end(at);
        Ok(())
    }

    /// Declare a set (`type … ; flags … ; timeout …s ;`, as affinity sets are).
    pub fn add_set(&mut self, name: &str, decl: &str) -> Result<(), NetlinkError> {
        let what = format!("add set inet {} {name} {{ {decl} }}", self.table);
        let at = self.batch.command(NFT_MSG_NEWSET, NLM_F_CREATE, what);
        let buf = &mut self.batch.buf;
        buf.str_attr(1, &self.table); // NFTA_SET_TABLE
        buf.str_attr(2, name); // NFTA_SET_NAME
        self.set_id += 1;
        if set_declaration(buf, decl, self.set_id).is_none() {
            self.batch.abandon(at);
            return Err(NetlinkError::Unsupported(format!(
                "set {name} {{ {decl} }}"
            )));
        }
        self.batch.end(at);
        Ok(())
    }

    fn set_command(&mut self, kind: u16, verb: &str, name: &str) {
        let what = format!("{verb} set inet {} {name}", self.table);
        let at = self.batch.command(kind, 0, what);
        let buf = &mut self.batch.buf;
        // NFTA_SET_TABLE, NFTA_SET_NAME (NFTA_SET_ELEM_LIST_TABLE, _SET for a flush)
        buf.str_attr(1, &self.table);
        buf.str_attr(2, name);
        self.batch.end(at);
    }

    pub fn delete_set(&mut self, name: &str) {
        self.set_command(NFT_MSG_DELSET, "delete", name);
    }

    /// Remove every element of a set (a DELSETELEM without elements).
    pub fn flush_set(&mut self, name: &str) {
        self.set_command(NFT_MSG_DELSETELEM, "flush", name);
    }

    /// Add elements (`key`, or `key` and its data) to a set or map.
    pub fn add_elements<'a>(
        &mut self,
        set: &str,
        items: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<(), NetlinkError> {
        self.elements(set, items, true)
    }

    /// Remove elements, by key.
    pub fn delete_elements<'a>(
        &mut self,
        set: &str,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), NetlinkError> {
        self.elements(set, keys.into_iter().map(|k| (k, None)), false)
    }

    fn elements<'a>(
        &mut self,
        set: &str,
        items: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
        add: bool,
    ) -> Result<(), NetlinkError> {
        let slots = is_slot_map(set);
        let (kind, flags, verb) = if add {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add")
        } else {
            (NFT_MSG_DELSETELEM, 0, "delete")
        };
        // (message, element list) offsets of the open message, and its element count
        let mut open: Option<(usize, usize)> = None;
        let mut count = 0;
        for (key, value) in items {
            let (at, list) = match open {
                Some(o) => o,
                None => {
                    let what = format!("{verb} element inet {} {set} {{ {key}, … }}", self.table);
                    let at = self.batch.command(kind, flags, what);
                    self.batch.buf.str_attr(1, &self.table); // NFTA_SET_ELEM_LIST_TABLE
                    self.batch.buf.str_attr(2, set); // NFTA_SET_ELEM_LIST_SET
                    let list = self.batch.buf.nest_begin(3); // NFTA_SET_ELEM_LIST_ELEMENTS
                    open = Some((at, list));
                    (at, list)
                }
            };
            let value = if add { value } else { None };
            if element(&mut self.batch.buf, slots, key, value).is_none() {
                let item = match value {
                    Some(v) => format!("{key} : {v}"),
                    None => key.to_string(),
                };
                self.batch.abandon(at);
                return Err(NetlinkError::Unsupported(format!(
                    "element {item} of {set}"
                )));
            }
            count += 1;
            if count == ELEMENTS_PER_MESSAGE {
                self.batch.buf.nest_end(list);
                self.batch.end(at);
                open = None;
                count = 0;
            }
        }
        if let Some((at, list)) = open {
            self.batch.buf.nest_end(list);
            self.batch.end(at);
        }
        Ok(())
    }
}

/// The transaction for a script of per-Service commands on `inet <table>`.
pub(crate) fn encode_script(script: &str) -> Result<Transaction, NetlinkError> {
    let mut tx: Option<Transaction> = None;
    for line in script.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let unsupported = || NetlinkError::Unsupported(line.to_string());
        let mut words = line.splitn(5, ' ');
        let (verb, what, family, table) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        let rest = words.next().unwrap_or("");
        if family != "inet" || table.is_empty() {
            return Err(unsupported());
        }
        let (name, tail) = match rest.split_once(' ') {
            Some((n, t)) => (n, t),
            None => (rest, ""),
        };
        if name.is_empty() {
            return Err(unsupported());
        }
        let tx = tx.get_or_insert_with(|| Transaction::new(table));
        if tx.table != table {
            return Err(unsupported());
        }
        match (verb, what) {
            ("add", "chain") if tail.is_empty() => tx.add_chain(name),
            ("flush", "chain") if tail.is_empty() => tx.flush_chain(name),
            ("delete", "chain") if tail.is_empty() => tx.delete_chain(name),
            ("add", "rule") => tx.add_rule(name, tail).map_err(|_| unsupported())?,
            ("add", "set") => {
                let decl = tail
                    .trim()
                    .strip_prefix('{')
                    .and_then(|d| d.strip_suffix('}'))
                    .ok_or_else(unsupported)?;
                tx.add_set(name, decl.trim()).map_err(|_| unsupported())?;
            }
            ("delete", "set") if tail.is_empty() => tx.delete_set(name),
            ("flush", "set") if tail.is_empty() => tx.flush_set(name),
            ("add", "element") => {
                let items = braces(tail).ok_or_else(unsupported)?;
                tx.add_elements(name, items.into_iter().map(split_item))
                    .map_err(|_| unsupported())?;
            }
            ("delete", "element") => {
                let items = braces(tail).ok_or_else(unsupported)?;
                tx.delete_elements(name, items.into_iter().map(|i| split_item(i).0))
                    .map_err(|_| unsupported())?;
            }
            _ => return Err(unsupported()),
        }
    }
    Ok(tx.unwrap_or_else(|| Transaction::new("")))
}

/// A netlink socket to nf_tables in one network namespace, kept open between syncs.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Open the socket in this network namespace, or in the named one (`/run/netns/<name>`,
    /// entered by a short-lived thread: the socket stays bound to it).
    pub fn open(netns: Option<&str>) -> Result<Netlink, NetlinkError> {
        let fd = match netns {
            None => socket()?,
            Some(name) => {
                let path = format!("/run/netns/{name}");
                let err = |source| NetlinkError::Open {
                    netns: name.to_string(),
                    source,
                };
                let ns = File::open(&path).map_err(err)?;
                std::thread::scope(|s| {
                    s.spawn(|| {
                        rustix::thread::move_into_link_name_space(
                            ns.as_fd(),
                            Some(rustix::thread::LinkNameSpaceType::Network),
                        )?;
                        socket()
                    })
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("thread panicked")))
                })
                .map_err(err)?
            }
        };
        Ok(Netlink { fd, seq: 0 })
    }

    /// Apply a script of per-Service commands as one transaction.
    pub fn apply(&mut self, script: &str) -> Result<(), NetlinkError> {
        self.commit(encode_script(script)?)
    }

    /// Send a transaction and wait for the kernel's verdict on it.
    pub fn commit(&mut self, tx: Transaction) -> Result<(), NetlinkError> {
        let (buf, lines) = tx.batch.finish();
        if lines.is_empty() {
            return Ok(());
        }
        // The whole batch goes in one message: the socket buffer must hold it.
        rustix::net::sockopt::set_socket_send_buffer_size_force(&self.fd, buf.len() + 4096)
            .or_else(|_| {
                rustix::net::sockopt::set_socket_send_buffer_size(&self.fd, buf.len() + 4096)
            })?;
        rustix::net::sendto(
            &self.fd,
            &buf,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )?;
        // The kernel handles the batch within sendto: errors, if any, are queued already.
        let mut errors = Vec::new();
        let mut rbuf = vec![0u8; 1 << 16];
        loop {
            let n = match rustix::net::recv(&self.fd, &mut rbuf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => n,
                Err(Errno::AGAIN) => break,
                Err(e) => {
                    errors.push(format!("reading the kernel's answer: {e}"));
                    break;
                }
            };
            for (kind, seq, payload) in messages(&rbuf[..n]) {
                if kind == NLMSG_ERROR && payload.len() >= 4 {
                    let code = i32::from_ne_bytes(payload[..4].try_into().unwrap_or_default());
                    if code != 0 {
                        let line = lines
                            .binary_search_by_key(&seq, |(s, _)| *s)
                            .map_or("?", |i| lines[i].1.as_str());
                        let e = std::io::Error::from_raw_os_error(-code);
                        errors.push(format!("{e}: {}", truncate(line, 300)));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            errors.truncate(10);
            Err(NetlinkError::Rejected(errors.join("; ")))
        }
    }

    /// Names of the chains (or sets) of `inet <table>`.
    fn dump(&mut self, kind: u16, table: &str) -> Result<Vec<String>, NetlinkError> {
        let mut req = Vec::new();
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
        req.str_attr(1, table); // NFTA_CHAIN_TABLE / NFTA_SET_TABLE: a filter
        let len = req.len() as u32;
        req[..4].copy_from_slice(&len.to_ne_bytes());
        rustix::net::sendto(
            &self.fd,
            &req,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )?;
        let name_attr = if kind == NFT_MSG_GETCHAIN { 3 } else { 2 };
        let mut names = Vec::new();
        let mut rbuf = vec![0u8; 1 << 18];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut rbuf[..], RecvFlags::empty())?;
            for (k, s, payload) in messages(&rbuf[..n]) {
                if s != seq {
                    continue;
                }
                match k {
                    NLMSG_DONE => return Ok(names),
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(
                            payload
                                .get(..4)
                                .and_then(|b| b.try_into().ok())
                                .unwrap_or([0; 4]),
                        );
                        if code == -(Errno::NOENT.raw_os_error()) {
                            return Ok(Vec::new());
                        }
                        if code != 0 {
                            return Err(std::io::Error::from_raw_os_error(-code).into());
                        }
                    }
                    _ => {
                        // after the 4-byte nfgenmsg, the attributes
                        let attrs = payload.get(4..).unwrap_or_default();
                        let mut in_table = false;
                        let mut anonymous = false;
                        let mut name = None;
                        for (t, v) in attributes(attrs) {
                            let s = std::str::from_utf8(v).unwrap_or("").trim_end_matches('\0');
                            if t == 1 {
                                in_table = s == table;
                            } else if t == name_attr {
                                name = Some(s.to_string());
                            } else if kind == NFT_MSG_GETSET && t == 3 && v.len() == 4 {
                                // NFTA_SET_FLAGS: the anonymous sets of rules are theirs
                                let flags = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                                anonymous = flags & NFT_SET_ANONYMOUS != 0;
                            }
                        }
                        if let (true, false, Some(n)) = (in_table, anonymous, name) {
                            names.push(n);
                        }
                    }
                }
            }
        }
    }

    pub fn list_chains(&mut self, table: &str) -> Result<Vec<String>, NetlinkError> {
        self.dump(NFT_MSG_GETCHAIN, table)
    }

    pub fn list_sets(&mut self, table: &str) -> Result<Vec<String>, NetlinkError> {
        self.dump(NFT_MSG_GETSET, table)
    }
}

fn socket() -> std::io::Result<OwnedFd> {
    let fd = rustix::net::socket(
        AddressFamily::NETLINK,
        SocketType::RAW,
        Some(netlink::NETFILTER),
    )?;
    rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))?;
    Ok(fd)
}

fn truncate(s: &str, n: usize) -> &str {
    let cut = (0..=n.min(s.len()))
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    &s[..cut]
}

/// (type, sequence, payload) of each netlink message in a buffer.
fn messages(mut b: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            break;
        }
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        out.push((kind, seq, &b[16..len]));
        b = b.get(len.div_ceil(4) * 4..).unwrap_or_default();
    }
    out
}

/// (type, value) of each attribute.
fn attributes(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED, &b[4..len]));
        let next = len.div_ceil(4) * 4;
        b = b.get(next..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_fields_are_padded_in_concatenations() {
        assert_eq!(
            encode_fields("10.96.0.1 . tcp . 80", false).unwrap(),
            [10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        assert_eq!(encode_fields("10.0.0.1", false).unwrap(), [10, 0, 0, 1]);
        assert_eq!(encode_fields("7", true).unwrap(), 7u32.to_ne_bytes());
        assert_eq!(encode_fields("fd00::1 . 8080", false).unwrap().len(), 20);
        assert!(encode_fields("10.0.0.1 . bogus", false).is_none());
    }

    #[test]
    fn rules_of_the_proxier_are_encodable_and_others_are_not() {
        for rule in [
            "meta l4proto tcp dnat ip to numgen random mod 3 offset 100 map @endpoint-slots-1",
            "meta l4proto udp dnat ip6 to [fd00::1]:53",
            "ip saddr 10.42.0.0/16 goto service-x",
            "ip6 saddr fd00::/63 goto service-x",
            "fib saddr type local jump mark-for-masquerade",
            "ip saddr @affinity-x goto endpoint-x",
            "numgen random mod 3 == 0 goto endpoint-x",
            "update @affinity-x { ip saddr }",
            "ip daddr 10.96.0.1 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade",
        ] {
            assert!(rule_exprs(rule).is_some(), "{rule}");
        }
        for rule in [
            "counter",
            "ip saddr 10.0.0.1/33 drop",
            "ct state new accept",
        ] {
            assert!(rule_exprs(rule).is_none(), "{rule}");
        }
        // a prefix that is not byte-aligned is masked
        let e = rule_exprs("ip saddr 10.42.0.0/15 goto x").unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            ["meta", "cmp", "payload", "bitwise", "cmp", "immediate"]
        );
    }

    #[test]
    fn scripts_become_one_batch_and_unknown_lines_are_refused() {
        let script = "add chain inet t c\nflush chain inet t c\nadd rule inet t c goto d\n\
                      add element inet t service-ips { 10.96.0.1 . tcp . 80 : goto c }\n\
                      delete element inet t hairpin-ips { 10.0.0.1 . 10.0.0.1 }\n";
        let (buf, lines) = encode_script(script).unwrap().batch.finish();
        assert_eq!(lines.len(), 5);
        let kinds: Vec<u16> = messages(&buf).iter().map(|m| m.0 & 0xff).collect();
        assert_eq!(
            kinds,
            [
                NFNL_MSG_BATCH_BEGIN,
                NFT_MSG_NEWCHAIN,
                NFT_MSG_DELRULE,
                NFT_MSG_NEWRULE,
                NFT_MSG_NEWSETELEM,
                NFT_MSG_DELSETELEM,
                NFNL_MSG_BATCH_END
            ]
        );
        assert!(matches!(
            encode_script("add table inet t\n"),
            Err(NetlinkError::Unsupported(_))
        ));
    }
}
