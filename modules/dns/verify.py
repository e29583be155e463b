"""Verification: ask a server what it really publishes and report, per domain, each check as pass or fail.

Checks per sending domain: SPF (one valid record, within the lookup limits, authorising the sending IP),
DKIM (each expected selector publishes the expected key of 2048+ bits), DMARC (one valid record with the
expected policy), MX (the mail host, resolving to the sending IP), MTA-STS (a valid ``_mta-sts`` record; the
policy fetched over HTTPS with certificate validation from the address the stack's resolvers give, whose
``mx:`` lines match every MX record and whose derived id is the published one), TLS-RPT (a valid
``_smtp._tls`` record) and PTR (each sending IP's PTR names a host whose address records include that IP:
forward-confirmed reverse DNS), REPORTS (every DMARC and TLS-RPT report address has an MX, and other
organizations authorised DMARC reports) and HELO (the node's HELO name has SPF for its IPs and
forward-confirmed reverse DNS).

This is the library function the CLI's ``dns verify`` will call; it only reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from modules.dns import dkim, dmarc, mailauth, spf
from modules.dns.generate import DomainExpectation
from modules.dns.lookup import Lookup
from modules.dns.records import reverse_name
from modules.dns.sts_fetch import PolicyFetcher, PolicyFetchError

CHECKS = ("SPF", "DKIM", "DMARC", "MX", "MTA-STS", "TLS-RPT", "PTR", "REPORTS", "HELO")


@dataclass(frozen=True)
class CheckResult:
    check: str
    passed: bool
    reason: str


@dataclass
class DomainReport:
    domain: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if not result.passed]

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {r.check: {"pass": r.passed, "reason": r.reason} for r in self.results}


def _txt(lookup: Lookup, name: str, predicate) -> tuple[list[str], str | None]:
    answer = lookup(name, "TXT")
    if answer.status == "error":
        return [], f"lookup of {name} TXT failed: {answer.reason}"
    return [value for value in answer.values if predicate(value)], None


def check_spf(exp: DomainExpectation, lookup: Lookup) -> CheckResult:
    found, error = _txt(lookup, exp.domain, spf.is_spf)
    if error:
        return CheckResult("SPF", False, error)
    if len(found) != 1:
        return CheckResult("SPF", False, f"{exp.domain} has {len(found)} SPF records; exactly one is needed")
    count = spf.count_lookups(exp.domain, found[0], lookup)
    problems = count.errors + count.verdicts()
    if problems:
        return CheckResult("SPF", False, problems[0])
    for ip in exp.sending_ips:
        result = spf.evaluate(exp.domain, ip, lookup)
        if result.result != "pass":
            return CheckResult("SPF", False, f"{ip} gets '{result.result}': {result.reason}")
    return CheckResult(
        "SPF", True, f"one record, {count.lookups} lookups, authorises {', '.join(exp.sending_ips)}"
    )


def check_dkim(exp: DomainExpectation, lookup: Lookup) -> CheckResult:
    if not exp.dkim_keys:
        return CheckResult("DKIM", False, "no selector is expected for this domain")
    for selector, public in exp.dkim_keys:
        name = dkim.dkim_name(selector, exp.domain)
        answer = lookup(name, "TXT")
        if not answer.ok:
            why = answer.reason or ("no such name" if answer.status == "nxdomain" else "no TXT record")
            return CheckResult("DKIM", False, f"{name}: {why}")
        if len(answer.values) != 1:
            return CheckResult(
                "DKIM", False, f"{name}: {len(answer.values)} TXT records; exactly one is needed"
            )
        problems = dkim.validate_dkim(answer.values[0])
        if problems:
            return CheckResult("DKIM", False, f"{name}: {problems[0]}")
        published = dkim.parse_dkim(answer.values[0])[0].get("p", "")
        if public and published != public:
            return CheckResult(
                "DKIM", False, f"{name}: the published key is not the one the mail hosts sign with"
            )
    selectors = ", ".join(selector for selector, _ in exp.dkim_keys)
    return CheckResult("DKIM", True, f"selector(s) {selectors} publish the expected keys")


def check_dmarc(exp: DomainExpectation, lookup: Lookup) -> CheckResult:
    name = f"_dmarc.{exp.domain}"
    found, error = _txt(lookup, name, dmarc.is_dmarc)
    if error:
        return CheckResult("DMARC", False, error)
    if len(found) != 1:
        return CheckResult("DMARC", False, f"{name} has {len(found)} DMARC records; exactly one is needed")
    parsed = dmarc.check_dmarc(found[0])
    tags = parsed.tags
    if parsed.errors:
        return CheckResult("DMARC", False, f"{name}: {parsed.errors[0]}")
    if tags.get("p", "").lower() != exp.dmarc_policy:
        return CheckResult(
            "DMARC", False, f"{name}: policy is p={tags.get('p')}, expected p={exp.dmarc_policy}"
        )
    summary = "; ".join(f"{tag}={tags[tag]}" for tag in ("p", "sp", "np", "t") if tag in tags)
    if parsed.warnings:  # legacy RFC 7489 tags: receivers ignore them, the record still works
        summary += "; warning: " + "; ".join(parsed.warnings)
    return CheckResult("DMARC", True, summary)


def _addresses(lookup: Lookup, host: str) -> list[str]:
    return [value for rdtype in ("A", "AAAA") for value in (lookup(host, rdtype).values or ())]


def check_mx(exp: DomainExpectation, lookup: Lookup) -> CheckResult:
    answer = lookup(exp.domain, "MX")
    if not answer.ok:
        return CheckResult("MX", False, f"{exp.domain}: no MX record ({answer.reason or answer.status})")
    hosts = [value.split()[1].rstrip(".") for value in answer.values]
    if exp.mail_host not in hosts:
        return CheckResult("MX", False, f"{exp.domain}: MX points to {', '.join(hosts)}, not {exp.mail_host}")
    for host in hosts:
        if not _addresses(lookup, host):
            return CheckResult("MX", False, f"MX target {host} has no A or AAAA record")
    addresses = _addresses(lookup, exp.mail_host)
    missing = [ip for ip in exp.sending_ips if ip not in addresses]
    if missing:
        return CheckResult(
            "MX", False, f"{exp.mail_host} resolves to {', '.join(addresses)}, not {', '.join(missing)}"
        )
    return CheckResult("MX", True, f"{exp.mail_host} → {', '.join(addresses)}")


def _policy_addresses(lookup: Lookup, host: str) -> tuple[list[str], str | None]:
    """The policy host's addresses through the stack's resolvers (CNAMEs followed), or why there are none."""
    addresses, errors = [], []
    for rdtype in ("A", "AAAA"):
        answer = lookup(host, rdtype)
        addresses += list(answer.values if answer.ok else ())
        if answer.status == "error":
            errors.append(f"{rdtype}: {answer.reason}")
    if addresses:
        return addresses, None
    return [], f"the policy host {host} does not resolve" + (f" ({'; '.join(errors)})" if errors else "")


def fetch_sts_policy(
    domain: str, lookup: Lookup, fetcher: PolicyFetcher
) -> tuple[mailauth.StsPolicy | None, str, list[str], str | None]:
    """Fetch and parse ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` from every address of the host.

    Returns (policy, its text, the addresses, None) or (None, "", addresses, the first problem). Every
    address must serve the same valid policy: a sender may reach any of them.
    """
    host = f"mta-sts.{domain}"
    addresses, problem = _policy_addresses(lookup, host)
    if problem:
        return None, "", [], problem
    texts = []
    for address in addresses:
        try:
            texts.append(fetcher.fetch(host, address))
        except PolicyFetchError as exc:
            return None, "", addresses, exc.message
    if len(set(texts)) > 1:
        return None, "", addresses, f"{', '.join(addresses)} serve different policies for {host}"
    policy, problems = mailauth.parse_sts_policy(texts[0])
    if problems:
        return None, texts[0], addresses, f"{fetcher.url(host)}: {problems[0]}"
    return policy, texts[0], addresses, None


def check_mta_sts(
    exp: DomainExpectation, lookup: Lookup, fetcher: PolicyFetcher | None = None
) -> CheckResult:
    """The ``_mta-sts`` record, and the policy fetched over HTTPS as a sender would, against the MX records.

    ``fetcher`` holds the CA bundle and limits (default: the system trust store, port 443).
    """
    fetcher = fetcher or PolicyFetcher()
    name = f"_mta-sts.{exp.domain}"
    found, error = _txt(lookup, name, lambda v: v.startswith("v=STSv1"))
    if error:
        return CheckResult("MTA-STS", False, error)
    if len(found) != 1:
        return CheckResult("MTA-STS", False, f"{name} has {len(found)} STSv1 records; exactly one is needed")
    problems = mailauth.validate_sts_txt(found[0])
    if problems:
        return CheckResult("MTA-STS", False, f"{name}: {problems[0]}")
    policy, text, addresses, problem = fetch_sts_policy(exp.domain, lookup, fetcher)
    if policy is None:
        expected = mailauth.parse_sts_policy(exp.mta_sts_policy or "")[0]
        if expected is not None and expected.mode == "enforce":
            problem += " (mode is enforce: senders that know the policy will not deliver)"
        return CheckResult("MTA-STS", False, f"{exp.domain}: {problem}")
    answer = lookup(exp.domain, "MX")
    if not answer.ok:
        return CheckResult("MTA-STS", False, f"{exp.domain}: no MX record to match the policy against")
    patterns = ", ".join(policy.mx) or "none"
    for value in answer.values:
        host = value.split()[-1].rstrip(".")
        if policy.mode != "none" and not any(mailauth.mx_matches(host, p) for p in policy.mx):
            return CheckResult(
                "MTA-STS",
                False,
                f"{exp.domain}: MX {host} matches no mx: line of the served policy (mx: {patterns})",
            )
    published, derived = mailauth.sts_txt_id(found[0]), mailauth.sts_id(text)
    if published != derived:
        return CheckResult(
            "MTA-STS",
            False,
            f"{exp.domain}: {name} has id={published}, but the served policy's id is {derived}: the id "
            "must change with the policy, or senders keep a stale one",
        )
    if exp.mta_sts_policy is not None and text != exp.mta_sts_policy:
        return CheckResult(
            "MTA-STS", False, f"{exp.domain}: the served policy is not the one the stack computes"
        )
    return CheckResult(
        "MTA-STS",
        True,
        f"id={published}; mode {policy.mode}, mx {patterns}, fetched over HTTPS from {', '.join(addresses)}",
    )


def check_tls_rpt(exp: DomainExpectation, lookup: Lookup) -> CheckResult:
    name = f"_smtp._tls.{exp.domain}"
    found, error = _txt(lookup, name, lambda v: v.startswith("v=TLSRPTv1"))
    if error:
        return CheckResult("TLS-RPT", False, error)
    if len(found) != 1:
        return CheckResult(
            "TLS-RPT", False, f"{name} has {len(found)} TLSRPTv1 records; exactly one is needed"
        )
    problems = mailauth.validate_tls_rpt_txt(found[0])
    if problems:
        return CheckResult("TLS-RPT", False, f"{name}: {problems[0]}")
    return CheckResult("TLS-RPT", True, found[0])


def check_ptr(exp: DomainExpectation, lookup: Lookup) -> CheckResult:
    confirmed = []
    for ip in exp.sending_ips:
        answer = lookup(reverse_name(ip), "PTR")
        if not answer.ok:
            return CheckResult("PTR", False, f"{ip} has no PTR record ({answer.reason or answer.status})")
        hosts = [value.rstrip(".") for value in answer.values]
        if exp.ptr_host and exp.ptr_host not in hosts:
            return CheckResult("PTR", False, f"{ip} PTR is {', '.join(hosts)}, expected {exp.ptr_host}")
        forward = [h for h in hosts if ip in _addresses(lookup, h)]
        if not forward:
            return CheckResult("PTR", False, f"{ip} PTR {', '.join(hosts)} does not resolve back to {ip}")
        confirmed.append(f"{ip} ↔ {forward[0]}")
    return CheckResult("PTR", True, "; ".join(confirmed))


def check_reports(exp: DomainExpectation, lookup: Lookup) -> CheckResult:
    """Every published report address (DMARC rua/ruf, TLS-RPT rua) can receive mail, and each DMARC
    destination in another organization has authorised the reports (RFC 9989)."""
    tags: dict[str, dict[str, str]] = {}
    for kind, name, predicate in (
        ("DMARC", f"_dmarc.{exp.domain}", dmarc.is_dmarc),
        ("TLS-RPT", f"_smtp._tls.{exp.domain}", lambda v: v.startswith("v=TLSRPTv1")),
    ):
        found, error = _txt(lookup, name, predicate)
        if error:
            return CheckResult("REPORTS", False, error)
        if found:
            parsed = dmarc.check_dmarc(found[0]).tags if kind == "DMARC" else _tls_rpt_tags(found[0])
            tags[kind] = parsed
    checked = []
    for kind, names in (("DMARC", ("rua", "ruf")), ("TLS-RPT", ("rua",))):
        for name in names:
            for address in dmarc.report_addresses(tags.get(kind, {}), [name]):
                destination = address.rsplit("@", 1)[1].lower().rstrip(".")
                label = f"{kind} {name} mailto:{address}"
                mx = lookup(destination, "MX")
                if not mx.ok and not _addresses(lookup, destination):
                    return CheckResult(
                        "REPORTS", False, f"{label}: {destination} has no MX (nor A/AAAA) record"
                    )
                if kind == "DMARC" and dmarc.needs_authorization(exp.domain, destination):
                    auth = dmarc.authorization_name(exp.domain, destination)
                    if not any(dmarc.is_dmarc(v) for v in lookup(auth, "TXT").values):
                        return CheckResult(
                            "REPORTS", False, f"{label}: no authorisation record {auth} TXT v=DMARC1"
                        )
                checked.append(address)
    if not checked:
        return CheckResult("REPORTS", True, "no report addresses published")
    return CheckResult("REPORTS", True, "deliverable: " + ", ".join(dict.fromkeys(checked)))


def _tls_rpt_tags(text: str) -> dict[str, str]:
    pairs = (piece.strip().partition("=") for piece in text.split(";"))
    return {name.strip(): value.strip() for name, sep, value in pairs if sep}


def check_helo(exp: DomainExpectation, lookup: Lookup) -> CheckResult:
    """The sending node's HELO name has SPF authorising its IPs, resolves to them, and each IP's PTR
    names it (forward-confirmed reverse DNS)."""
    helo = exp.ptr_host
    if not helo:
        return CheckResult("HELO", False, "no HELO name is expected for this domain's node")
    found, error = _txt(lookup, helo, spf.is_spf)
    if error:
        return CheckResult("HELO", False, error)
    if len(found) != 1:
        return CheckResult("HELO", False, f"HELO name {helo} has {len(found)} SPF records; one is needed")
    addresses = _addresses(lookup, helo)
    for ip in exp.sending_ips:
        result = spf.evaluate(helo, ip, lookup)
        if result.result != "pass":
            return CheckResult("HELO", False, f"SPF of HELO name {helo} gives {ip} '{result.result}'")
        if ip not in addresses:
            return CheckResult("HELO", False, f"HELO name {helo} does not resolve to {ip}")
        ptr = [v.rstrip(".") for v in (lookup(reverse_name(ip), "PTR").values or ())]
        if helo not in ptr:
            return CheckResult(
                "HELO", False, f"PTR of {ip} is {', '.join(ptr) or 'missing'}, not the HELO name {helo}"
            )
    return CheckResult("HELO", True, f"{helo}: {found[0]}; ↔ {', '.join(exp.sending_ips)}")


CHECK_FUNCTIONS = {
    "SPF": check_spf,
    "DKIM": check_dkim,
    "DMARC": check_dmarc,
    "MX": check_mx,
    "MTA-STS": check_mta_sts,
    "TLS-RPT": check_tls_rpt,
    "PTR": check_ptr,
    "REPORTS": check_reports,
    "HELO": check_helo,
}


def verify_domain(
    exp: DomainExpectation,
    lookup: Lookup,
    checks: Iterable[str] = CHECKS,
    fetcher: PolicyFetcher | None = None,
) -> DomainReport:
    report = DomainReport(exp.domain)
    for name in checks:
        try:
            if name == "MTA-STS":
                report.results.append(check_mta_sts(exp, lookup, fetcher))
                continue
            report.results.append(CHECK_FUNCTIONS[name](exp, lookup))
        except Exception as exc:  # one broken check must not hide the others' results
            report.results.append(CheckResult(name, False, f"check failed: {type(exc).__name__}: {exc}"))
    return report


def verify(
    expectations: Iterable[DomainExpectation],
    lookup: Lookup,
    checks: Iterable[str] = CHECKS,
    workers: int = 4,
    fetcher: PolicyFetcher | None = None,
) -> list[DomainReport]:
    """Reports in the order of ``expectations``; domains are checked ``workers`` at a time.

    ``fetcher`` says how MTA-STS policies are fetched (CA bundle, port, timeout; default system trust).
    """
    expectations, checks = list(expectations), list(checks)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda exp: verify_domain(exp, lookup, checks, fetcher), expectations))


def expectations_from_output(items: Iterable[dict]) -> list[DomainExpectation]:
    """Turn ``MailDns.verification`` (a stack output of plain data) back into expectations."""
    return [
        DomainExpectation(
            domain=item["domain"],
            mail_host=item["mail_host"],
            sending_ips=tuple(item["sending_ips"]),
            dkim_keys=tuple((selector, public) for selector, public in item["dkim_keys"]),
            dmarc_policy=item["dmarc_policy"],
            ptr_host=item.get("ptr_host"),
            mta_sts_policy=item.get("mta_sts_policy"),
        )
        for item in items
    ]
