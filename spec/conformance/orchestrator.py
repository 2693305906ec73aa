#!/usr/bin/python3
"""A conformance client for the sacmrun grid protocol (docs/protocol.md, version 1).

Written from docs/protocol.md (and docs/api/roles.md, docs/guide.md) alone, without reading the
Lua code: an orchestrator, a plain grid account that advertises no role, and a session of a
collector's account (for the upload protocol), each a slixmpp client. It drives a running grid
and prints one line per check, `ok NAME` or `FAIL NAME: expected ..., got ...`, then
`N passed, M failed`; it exits 0 only if every check passed.

    /usr/bin/python3 spec/conformance/orchestrator.py < config.json   (or: ... config.json)

The config (JSON) names the server (host, port, domain, cafile, pubsub), the accounts
(orchestrator, plain, collector_account: {jid, password}), the repository's bare JID, the
evaluator's and collectors' full JIDs with what the grid was started with, the test policy's
rules, and the reference orchestrator's command line. spec/conformance_spec.lua writes it.
"""
import asyncio
import base64
import hashlib
import http.client
import json
import logging
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

NS_GRID = 'urn:sacmrun:grid:1'
NS_POSTURE = 'urn:sacmrun:posture:1'
NS_RESULT = 'urn:sacmrun:result:1'
NS_STATUS = 'urn:sacmrun:status:1'
NS_UPLOAD = 'urn:xmpp:http:upload:0'
NS_CMD = 'http://jabber.org/protocol/commands'
NS_DATA = 'jabber:x:data'
NS_XDV = 'http://jabber.org/protocol/xdata-validate'
NS_INFO = 'http://jabber.org/protocol/disco#info'
NS_ITEMS = 'http://jabber.org/protocol/disco#items'
NS_CAPS = 'http://jabber.org/protocol/caps'
NS_PUBSUB = 'http://jabber.org/protocol/pubsub'
NS_PUBSUB_EVENT = 'http://jabber.org/protocol/pubsub#event'
NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas'

NODE = {k: NS_GRID + '#' + k for k in ('collect', 'evaluate', 'status', 'cancel', 'query', 'get')}
INFO_FORM = NS_GRID + '#info'
PN = {'posture': 'sacm/posture', 'results': 'sacm/results', 'status': 'sacm/status'}
RESULT_VALUES = {'pass', 'fail', 'error', 'notapplicable', 'notchecked'}
SEVERITIES = {'high', 'medium', 'low', 'info'}
COMMANDS_OF = {
    'collector': {NODE['collect'], NODE['status'], NODE['cancel']},
    'evaluator': {NODE['evaluate'], NODE['status']},
    'repository': {NODE['query'], NODE['get'], NODE['status']},
}
DATETIME = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')   # XEP-0082, UTC, milliseconds
UUID4 = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$')
DIGEST = re.compile(r'^sha-256:[0-9a-f]{64}$')
HEX64 = re.compile(r'^[0-9a-f]{64}$')
INT = re.compile(r'^-?\d+$')
INLINE_MAX = 8192
NOTIFICATION_MAX = 16384


class Fail(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Fail(msg)


def q(name, ns):
    return '{%s}%s' % (ns, name)


def local(tag):
    return tag.split('}', 1)[-1]


def ser(el):
    return ET.tostring(el, encoding='unicode')


def short(el, n=300):
    if el is None:
        return 'nothing'
    s = ser(el)
    s = re.sub(r'\s*xmlns(:\w+)?="[^"]*"', '', s)
    return s if len(s) <= n else s[:n] + '...'


# ----------------------------------------------------------------------------- data forms
def parse_form(x):
    """A jabber:x:data element -> dict."""
    f = {'type': x.get('type'), 'title': (x.findtext(q('title', NS_DATA)) or ''), 'fields': {},
         'order': [], 'reported': [], 'items': []}
    for fe in x.findall(q('field', NS_DATA)):
        var = fe.get('var')
        v = fe.find(q('validate', NS_XDV))
        f['fields'][var] = {
            'type': fe.get('type'), 'values': [ve.text or '' for ve in fe.findall(q('value', NS_DATA))],
            'options': [o.findtext(q('value', NS_DATA)) for o in fe.findall(q('option', NS_DATA))],
            'required': fe.find(q('required', NS_DATA)) is not None,
            'datatype': v.get('datatype') if v is not None else None,
        }
        f['order'].append(var)
    rep = x.find(q('reported', NS_DATA))
    if rep is not None:
        f['reported'] = [fe.get('var') for fe in rep.findall(q('field', NS_DATA))]
    for it in x.findall(q('item', NS_DATA)):
        row = {}
        for fe in it.findall(q('field', NS_DATA)):
            row[fe.get('var')] = [ve.text or '' for ve in fe.findall(q('value', NS_DATA))]
        f['items'].append(row)
    ft = f['fields'].get('FORM_TYPE')
    f['form_type'] = ft['values'][0] if ft and ft['values'] else None
    return f


def submit_form(form_type, values):
    """values: var -> str or list of str (None: left out)."""
    x = ET.Element(q('x', NS_DATA), {'type': 'submit'})
    if form_type is not None:
        fe = ET.SubElement(x, q('field', NS_DATA), {'var': 'FORM_TYPE', 'type': 'hidden'})
        ET.SubElement(fe, q('value', NS_DATA)).text = form_type
    for var, val in values.items():
        if val is None:
            continue
        fe = ET.SubElement(x, q('field', NS_DATA), {'var': var})
        for v in (val if isinstance(val, list) else [val]):
            ET.SubElement(fe, q('value', NS_DATA)).text = str(v)
    return x


def fval(form, var):
    if form is None or var not in form['fields']:
        return None
    vals = form['fields'][var]['values']
    return vals[0] if vals else ''


def fvals(form, var):
    if form is None or var not in form['fields']:
        return None
    return form['fields'][var]['values']


# ----------------------------------------------------------------------------- replies
class Reply:
    """The answer to an IQ: a result or an error."""

    def __init__(self, iq_xml, timeout=False):
        self.xml = iq_xml
        self.timeout = timeout
        self.type = iq_xml.get('type') if iq_xml is not None else 'timeout'
        self.conditions, self.text, self.error_type = set(), '', None
        err = iq_xml.find(q('error', 'jabber:client')) if iq_xml is not None else None
        if err is not None:
            self.error_type = err.get('type')
            for c in err:
                if local(c.tag) == 'text':
                    self.text = c.text or ''
                else:
                    self.conditions.add(local(c.tag))
        self.cmd = iq_xml.find(q('command', NS_CMD)) if iq_xml is not None else None
        self.status = self.cmd.get('status') if self.cmd is not None else None
        self.sessionid = self.cmd.get('sessionid') if self.cmd is not None else None
        x = self.cmd.find(q('x', NS_DATA)) if self.cmd is not None else None
        self.form = parse_form(x) if x is not None else None
        self.actions = None
        if self.cmd is not None:
            a = self.cmd.find(q('actions', NS_CMD))
            if a is not None:
                self.actions = {'execute': a.get('execute'), 'offered': [local(c.tag) for c in a]}

    def describe(self):
        if self.timeout:
            return 'no answer (timeout)'
        if self.type == 'error':
            conds = ''.join('<%s/>' % c for c in sorted(self.conditions))
            return 'error type=%s %s%s' % (self.error_type, conds, (" text '%s'" % self.text) if self.text else '')
        if self.cmd is not None:
            d = "command status='%s'" % self.status
            if self.form is not None:
                d += ' form %s' % self.form.get('type')
                if self.form['title']:
                    d += " '%s'" % self.form['title']
            return d
        return 'result ' + short(self.xml, 200)

    def child(self, name, ns):
        return self.xml.find(q(name, ns)) if self.xml is not None else None


def bad_payload_check(r, field):
    """The documented answer to a bad submission: bad-request, <bad-payload/>, a text naming the field."""
    want = "bad-request with <bad-payload/> and a text naming '%s'" % field
    expect(r.type == 'error', 'expected %s, got %s' % (want, r.describe()))
    expect('bad-request' in r.conditions and 'bad-payload' in r.conditions and field in r.text,
           'expected %s, got %s' % (want, r.describe()))


def error_check(r, conds, what=None):
    want = what or ' + '.join('<%s/>' % c for c in conds)
    expect(r.type == 'error' and all(c in r.conditions for c in conds), 'expected %s, got %s' % (want, r.describe()))


# ----------------------------------------------------------------------------- XEP-0115
def caps_ver(query):
    """The XEP-0115 (section 5.1) verification string of a disco#info <query/>, SHA-1, base64."""
    idents = []
    for i in query.findall(q('identity', NS_INFO)):
        idents.append('%s/%s/%s/%s' % (i.get('category', ''), i.get('type', ''),
                                       i.get('{http://www.w3.org/XML/1998/namespace}lang', ''), i.get('name', '')))
    s = ''.join(x + '<' for x in sorted(idents))
    s += ''.join(f + '<' for f in sorted(fe.get('var') for fe in query.findall(q('feature', NS_INFO))))
    forms = []
    for x in query.findall(q('x', NS_DATA)):
        f = parse_form(x)
        if f['form_type'] is None:
            continue
        part = f['form_type'] + '<'
        for var in sorted(v for v in f['fields'] if v != 'FORM_TYPE'):
            part += var + '<'
            part += ''.join(v + '<' for v in sorted(f['fields'][var]['values']))
        forms.append((f['form_type'], part))
    s += ''.join(p for _, p in sorted(forms))
    return base64.b64encode(hashlib.sha1(s.encode('utf-8')).digest()).decode()


# ----------------------------------------------------------------------------- payloads
def posture_of(el):
    a = dict(el.attrib)
    err = el.find(q('error', NS_POSTURE))
    a['_error'] = (err.get('condition'), err.text or '') if err is not None else None
    a['_attrs'] = el.findall(q('attr', NS_POSTURE))
    a['_items'] = el.findall(q('item', NS_POSTURE))
    a['_el'] = el
    return a


def status_of(el):
    s = dict(el.attrib)
    s['text'] = el.findtext(q('text', NS_STATUS)) or ''
    attrs = {}
    for a in el.findall(q('attr', NS_STATUS)):
        attrs.setdefault(a.get('name'), []).append(a.text or '')
    s['attrs'] = attrs
    return s


def status_list(s, name):
    """A status field that holds a list: several <attr>s, or one with the values separated."""
    vals = s['attrs'].get(name)
    if vals is None:
        return None
    if len(vals) == 1:
        return [v for v in re.split(r'[\s,]+', vals[0]) if v]
    return vals


def check_attr_types(attrs, where):
    for a in attrs:
        t, v = a.get('type'), a.text or ''
        expect(a.get('name'), '%s: an <attr> without name' % where)
        if t == 'int':
            expect(INT.match(v), "%s: attr %s type='int' has value %r" % (where, a.get('name'), v))
        elif t == 'float':
            try:
                float(v)
            except ValueError:
                raise Fail("%s: attr %s type='float' has value %r" % (where, a.get('name'), v))
        elif t == 'bool':
            expect(v in ('true', 'false'), "%s: attr %s type='bool' has value %r" % (where, a.get('name'), v))
        else:
            expect(t is None, "%s: attr %s has type %r (documented: int, float, bool or none)" % (where, a.get('name'), t))


# ----------------------------------------------------------------------------- HTTPS
class Https:
    def __init__(self, cafile):
        self.ctx = ssl.create_default_context(cafile=cafile)   # verifies chain and host name

    def request(self, method, url, body=None, headers=None):
        u = urllib.parse.urlsplit(url)
        expect(u.scheme == 'https', 'expected an https URL, got %r' % url)
        conn = http.client.HTTPSConnection(u.hostname, u.port or 443, context=self.ctx, timeout=20)
        try:
            path = u.path + ('?' + u.query if u.query else '')
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()


# ----------------------------------------------------------------------------- clients
class Account(slixmpp.ClientXMPP):
    def __init__(self, cfg, account, role=None, presence=True):
        super().__init__(account['jid'], account['password'])
        self.cfg = cfg
        self.role = role
        self.send_initial_presence = presence
        self.ca_certs = Path(cfg['cafile'])
        for p in ('xep_0030', 'xep_0004', 'xep_0128', 'xep_0115', 'xep_0199'):
            self.register_plugin(p)
        self.presences = {}        # full JID -> presence element (the last one)
        self.events = []           # (node, item id, payload element or None, retract?)
        self.event_cond = asyncio.Condition()
        self.add_event_handler('session_start', self.on_start)
        self.add_event_handler('presence', self.on_presence)
        # pubsub notifications are headline messages without a body: slixmpp's 'message' event
        # does not see them
        self.register_handler(Callback('pubsub event', MatchXPath('{jabber:client}message/{%s}event' % NS_PUBSUB_EVENT),
                                       self.on_message))
        self.started = asyncio.get_event_loop().create_future()

    async def on_start(self, _):
        disco = self['xep_0030']
        try:
            disco.del_identity(category='client', itype='bot')
        except Exception:
            pass
        disco.add_identity(category='client', itype='bot', name='conformance ' + (self.role or 'account'))
        disco.add_feature(NS_CMD)
        if self.role:
            disco.add_feature(NS_GRID + '#' + self.role)
            form = self['xep_0004'].make_form(ftype='result')
            form.add_field(var='FORM_TYPE', ftype='hidden', value=INFO_FORM)
            form.add_field(var='role', value=self.role)
            self['xep_0128'].set_extended_info(data=form)
        if self.send_initial_presence:
            await self['xep_0115'].update_caps(broadcast=False)
            self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def on_presence(self, pres):
        self.presences[str(pres['from'])] = pres.xml

    def on_message(self, msg):
        asyncio.ensure_future(self._on_event(msg))

    async def _on_event(self, msg):
        ev = msg.xml.find(q('event', NS_PUBSUB_EVENT))
        if ev is None:
            return
        async with self.event_cond:
            for items in ev.findall(q('items', NS_PUBSUB_EVENT)):
                node = items.get('node')
                for it in items:
                    payload = list(it)[0] if len(it) else None
                    self.events.append({'node': node, 'id': it.get('id'), 'el': payload,
                                        'size': len(ser(it)), 'at': time.monotonic()})
            self.event_cond.notify_all()

    async def wait_events(self, pred, count=1, timeout=20):
        """Events for which pred(event) holds, once there are `count` of them or at the deadline."""
        deadline = time.monotonic() + timeout
        async with self.event_cond:
            while True:
                got = [e for e in self.events if e['el'] is not None and pred(e)]
                left = deadline - time.monotonic()
                if len(got) >= count or left <= 0:
                    return got
                try:
                    await asyncio.wait_for(self.event_cond.wait(), left)
                except asyncio.TimeoutError:
                    pass

    async def iq(self, to, typ, payload, timeout=15):
        iq = self.make_iq(ito=to, itype=typ)
        iq.append(payload)
        try:
            r = await iq.send(timeout=timeout)
            return Reply(r.xml)
        except IqError as e:
            return Reply(e.iq.xml)
        except IqTimeout:
            return Reply(None, timeout=True)

    async def cmd(self, to, node, action='execute', sessionid=None, form=None, timeout=15):
        c = ET.Element(q('command', NS_CMD), {'node': node})
        if action is not None:
            c.set('action', action)
        if sessionid:
            c.set('sessionid', sessionid)
        if form is not None:
            c.append(form)
        return await self.iq(to, 'set', c, timeout)

    async def run(self, to, name, values, form_type=None, timeout=15):
        """The documented flow: execute, then complete with the form. -> (execute reply, complete reply)."""
        node = NODE[name]
        first = await self.cmd(to, node, 'execute', timeout=timeout)
        if first.type != 'result' or first.status != 'executing':
            return first, None
        second = await self.cmd(to, node, 'complete', first.sessionid,
                                submit_form(form_type or node, values), timeout=timeout)
        return first, second

    async def disco_info(self, to, node=None):
        query = ET.Element(q('query', NS_INFO))
        if node:
            query.set('node', node)
        return await self.iq(to, 'get', query)

    async def disco_items(self, to, node=None):
        query = ET.Element(q('query', NS_ITEMS))
        if node:
            query.set('node', node)
        return await self.iq(to, 'get', query)


def pubsub_el(child, attrs, ns=NS_PUBSUB):
    p = ET.Element(q('pubsub', ns))
    ET.SubElement(p, q(child, ns), attrs)
    return p


# ----------------------------------------------------------------------------- the checks
class Suite:
    def __init__(self, cfg):
        self.cfg = cfg
        self.passed = 0
        self.failed = 0
        self.state = {}
        self.https = Https(cfg['cafile'])
        self.c1 = cfg['collectors'][0]
        self.c2 = cfg['collectors'][1]
        self.repo_full = None
        self.refusal_log = []
        self.dead = None

    def report(self, name, ok, msg=''):
        if ok:
            self.passed += 1
            print('ok ' + name, flush=True)
        else:
            self.failed += 1
            print('FAIL %s: %s' % (name, msg.replace('\n', ' ')), flush=True)

    async def check(self, name, fn, *args):
        if self.dead and name != 'connect-orchestrator':
            self.report(name, False, 'not run: %s' % self.dead)
            return
        try:
            await fn(*args)
            self.report(name, True)
        except Fail as e:
            self.report(name, False, str(e))
        except Exception as e:   # a bug of the client or an answer it could not read
            self.report(name, False, 'the check raised %s: %s' % (type(e).__name__, e))

    def need(self, key, what):
        v = self.state.get(key)
        if v is None:
            raise Fail('cannot check: %s (an earlier check failed)' % what)
        return v

    # -- helpers on the orchestrator ------------------------------------------------------
    def posture_events(self, corr):
        return [e for e in self.o.events if e['node'] == PN['posture'] and e['el'] is not None
                and e['el'].tag == q('posture', NS_POSTURE) and e['el'].get('correlation') == corr]

    async def wait_posture(self, corr, count, timeout=20):
        return await self.o.wait_events(lambda e: e['node'] == PN['posture'] and e['el'].tag == q('posture', NS_POSTURE)
                                        and e['el'].get('correlation') == corr, count, timeout)

    async def wait_status(self, corr, types, timeout=20):
        got = await self.o.wait_events(lambda e: e['node'] == PN['status'] and e['el'].tag == q('status', NS_STATUS)
                                       and e['el'].get('correlation') == corr and e['el'].get('type') in types, 1, timeout)
        return status_of(got[0]['el']) if got else None

    async def wait_results(self, corr, count=1, timeout=30):
        return await self.o.wait_events(lambda e: e['node'] == PN['results'] and e['el'].tag == q('results', NS_RESULT)
                                        and e['el'].get('correlation') == corr, count, timeout)

    async def collect(self, jid, kinds, corr, timeout=None):
        vals = {'kinds': kinds, 'correlation': corr}
        if timeout is not None:
            vals['timeout'] = str(timeout)
        return await self.o.run(jid, 'collect', vals)

    # -- connection and registration ------------------------------------------------------
    async def connect(self, acc):
        acc.connect((self.cfg['host'], self.cfg['port']))
        try:
            await asyncio.wait_for(acc.started, 20)
        except asyncio.TimeoutError:
            raise Fail('expected a session (STARTTLS verified against the grid CA, SASL), got none within 20 s')

    def component_presence(self, jid):
        p = self.o.presences.get(jid)
        if p is None or p.get('type') not in (None, 'available'):
            return None
        return p

    async def c_registration(self):
        want = [self.cfg['evaluator'], self.c1['jid'], self.c2['jid']]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            repo = [j for j, p in self.o.presences.items() if j.startswith(self.cfg['repository'] + '/')
                    and p.get('type') in (None, 'available')]
            if repo:
                self.repo_full = repo[0]
            if self.repo_full and all(self.component_presence(j) is not None for j in want):
                break
            await asyncio.sleep(0.2)
        missing = [j for j in want if self.component_presence(j) is None]
        if not self.repo_full:
            missing.append(self.cfg['repository'] + '/*')
        expect(not missing, 'expected the presence of every component once registered (2.2), none from %s' % ', '.join(missing))

    def roles(self):
        r = [('collector', self.c1['jid']), ('collector2', self.c2['jid']), ('evaluator', self.cfg['evaluator'])]
        if self.repo_full:
            r.append(('repository', self.repo_full))
        return r

    async def c_caps_element(self):
        bad = []
        for name, jid in self.roles():
            p = self.component_presence(jid)
            c = p.find(q('c', NS_CAPS)) if p is not None else None
            if c is None or c.get('hash') != 'sha-1' or not c.get('ver') or not c.get('node'):
                bad.append('%s: %s' % (name, short(c)))
        expect(not bad and len(self.roles()) == 4,
               "expected a <c xmlns='%s' hash='sha-1' node=... ver=...> in each role's presence, got %s" % (NS_CAPS, '; '.join(bad) or 'no repository'))

    # -- discovery ------------------------------------------------------------------------
    async def fetch_info(self, name, jid):
        key = 'info:' + name
        if key not in self.state:
            r = await self.o.disco_info(jid)
            expect(r.type == 'result', 'expected a disco#info result, got %s' % r.describe())
            self.state[key] = r.child('query', NS_INFO)
        return self.state[key]

    def role_of(self, name):
        return 'collector' if name.startswith('collector') else name

    async def c_identity(self, name, jid):
        qr = await self.fetch_info(name, jid)
        ids = [(i.get('category'), i.get('type')) for i in qr.findall(q('identity', NS_INFO))]
        expect(ids == [('client', 'bot')], 'expected exactly one identity client/bot (2.1), got %s' % ids)

    async def c_features(self, name, jid):
        qr = await self.fetch_info(name, jid)
        feats = {f.get('var') for f in qr.findall(q('feature', NS_INFO))}
        role = self.role_of(name)
        want = {NS_GRID + '#' + role, NS_CMD, NS_CAPS}
        if role == 'collector':
            c = self.c1 if name == 'collector' else self.c2
            if 'kinds' in c:
                want |= {NS_GRID + ':collect:' + k for k in c['kinds']}
        if role == 'evaluator':
            want.add(NS_GRID + ':policy:' + self.cfg['policy']['id'])
        if role == 'repository':
            want.add(NS_UPLOAD)
        others = {NS_GRID + '#' + r for r in ('collector', 'evaluator', 'repository', 'orchestrator')} - {NS_GRID + '#' + role}
        expect(want <= feats and not (feats & others),
               'expected features %s and no other role, got missing %s, other roles %s' % (
                   sorted(want), sorted(want - feats), sorted(feats & others)))
        if role == 'collector':
            self.state['kinds:' + name] = sorted(f[len(NS_GRID + ':collect:'):] for f in feats if f.startswith(NS_GRID + ':collect:'))

    async def c_info_form(self, name, jid):
        qr = await self.fetch_info(name, jid)
        forms = [parse_form(x) for x in qr.findall(q('x', NS_DATA))]
        info = [f for f in forms if f['form_type'] == INFO_FORM]
        expect(len(info) == 1, 'expected one form of FORM_TYPE %s, got %d' % (INFO_FORM, len(info)))
        f = info[0]
        role = self.role_of(name)
        expect(fval(f, 'role') == role, 'expected role=%s, got %r' % (role, fval(f, 'role')))
        if role == 'collector':
            c = self.c1 if name == 'collector' else self.c2
            for var in ('endpoint', 'hostname', 'kinds'):
                expect(var in f['fields'], "expected field '%s' in the collector's info form, got %s" % (var, f['order']))
            expect(fval(f, 'endpoint') == c['endpoint'], 'expected endpoint %s, got %r' % (c['endpoint'], fval(f, 'endpoint')))
            feats = sorted(fe.get('var')[len(NS_GRID + ':collect:'):] for fe in qr.findall(q('feature', NS_INFO))
                           if fe.get('var').startswith(NS_GRID + ':collect:'))
            expect(sorted(fvals(f, 'kinds')) == feats,
                   'expected kinds %s (the collect:KIND features), got %s' % (feats, fvals(f, 'kinds')))
        if role == 'evaluator':
            expect(self.cfg['policy']['id'] in (fvals(f, 'policies') or []),
                   "expected policies to hold %r, got %s" % (self.cfg['policy']['id'], fvals(f, 'policies')))

    async def c_caps_ver(self, name, jid):
        p = self.component_presence(jid)
        c = p.find(q('c', NS_CAPS)) if p is not None else None
        expect(c is not None, 'expected caps in the presence, got %s' % short(p))
        r = await self.o.disco_info(jid, c.get('node') + '#' + c.get('ver'))
        expect(r.type == 'result', "expected disco#info of node '%s#%s' (XEP-0115 6.2), got %s" % (c.get('node'), c.get('ver'), r.describe()))
        mine = caps_ver(r.child('query', NS_INFO))
        expect(mine == c.get('ver'), 'expected ver %s (XEP-0115 5.1 over the disco#info answer), the presence says %s' % (mine, c.get('ver')))
        plain = caps_ver(await self.fetch_info(name, jid))
        expect(plain == c.get('ver'), 'expected the plain disco#info to hash to the presence ver %s, it hashes to %s' % (c.get('ver'), plain))

    async def c_command_list(self, name, jid):
        r = await self.o.disco_items(jid, NS_CMD)
        expect(r.type == 'result', 'expected disco#items of %s, got %s' % (NS_CMD, r.describe()))
        nodes = {i.get('node') for i in r.child('query', NS_ITEMS).findall(q('item', NS_ITEMS))}
        grid = {n for n in nodes if n and n.startswith(NS_GRID)}
        want = COMMANDS_OF[self.role_of(name)]
        expect(grid == want, 'expected the commands %s, got %s' % (sorted(want), sorted(grid)))

    async def c_upload_disco(self):
        qr = await self.fetch_info('repository', self.repo_full)
        feats = {f.get('var') for f in qr.findall(q('feature', NS_INFO))}
        expect(NS_UPLOAD in feats, 'expected feature %s, got %s' % (NS_UPLOAD, sorted(feats)))
        forms = [parse_form(x) for x in qr.findall(q('x', NS_DATA))]
        up = [f for f in forms if f['form_type'] == NS_UPLOAD]
        expect(up and INT.match(fval(up[0], 'max-file-size') or ''),
               'expected a form %s with an integer max-file-size, got %s' % (NS_UPLOAD, [f['form_type'] for f in forms]))
        self.state['max'] = int(fval(up[0], 'max-file-size'))

    # -- pubsub ---------------------------------------------------------------------------
    async def subscribe(self, acc, node, timeout):
        deadline = time.monotonic() + timeout
        while True:
            r = await acc.iq(self.cfg['pubsub'], 'set', pubsub_el('subscribe', {'node': node, 'jid': acc.boundjid.bare}))
            if r.type == 'result' or time.monotonic() > deadline:
                return r
            await asyncio.sleep(0.5)

    async def c_subscribe(self, node):
        # the repository admits the orchestrator once it has verified its caps (section 4)
        r = await self.subscribe(self.o, node, 20)
        expect(r.type == 'result', "expected the orchestrator's subscription to %s to be accepted (member/publisher, section 4), got %s" % (node, r.describe()))
        s = r.child('pubsub', NS_PUBSUB)
        sub = s.find(q('subscription', NS_PUBSUB)) if s is not None else None
        expect(sub is None or sub.get('subscription') in (None, 'subscribed'),
               "expected subscription='subscribed', got %s" % short(sub))

    async def affiliations(self, acc):
        r = await acc.iq(self.cfg['pubsub'], 'get', pubsub_el('affiliations', {}))
        if r.type != 'result':
            return r, None
        affs = {}
        s = r.child('pubsub', NS_PUBSUB)
        for a in s.find(q('affiliations', NS_PUBSUB)) if s is not None and s.find(q('affiliations', NS_PUBSUB)) is not None else []:
            affs[a.get('node')] = a.get('affiliation')
        return r, affs

    async def publish_probe(self, acc, node):
        """Publish a throw-away item: the answer shows whether acc may publish on node."""
        if node == PN['status']:
            el = ET.Element(q('status', NS_STATUS), {'type': 'online', 'component': str(acc.boundjid),
                                                     'role': acc.role or 'none', 'at': now()})
        else:
            el = ET.Element(q('conformance-probe', 'urn:example:conformance'))
        p = ET.Element(q('pubsub', NS_PUBSUB))
        pub = ET.SubElement(p, q('publish', NS_PUBSUB), {'node': node})
        ET.SubElement(pub, q('item', NS_PUBSUB)).append(el)
        return await acc.iq(self.cfg['pubsub'], 'set', p)

    async def effective_affiliations(self, acc):
        """XEP-0060 5.7 (retrieve affiliations) where the service has it, else what the account
        can do on each node: publish -> publisher, subscribe only -> member, neither -> none."""
        r, affs = await self.affiliations(acc)
        if affs is not None:
            return 'retrieved', {n: affs.get(n, 'none') for n in PN.values()}
        got = {}
        for node in PN.values():
            pub = await self.publish_probe(acc, node)
            if pub.type == 'result':
                got[node] = 'publisher'
                continue
            sub = await acc.iq(self.cfg['pubsub'], 'set', pubsub_el('subscribe', {'node': node, 'jid': acc.boundjid.bare}))
            got[node] = 'member' if sub.type == 'result' else 'none'
        return 'inferred from publish and subscribe (the service answered 5.7 with %s)' % r.describe(), got

    async def c_orch_affiliations(self):
        how, got = await self.effective_affiliations(self.o)
        want = {PN['posture']: 'member', PN['results']: 'member', PN['status']: 'publisher'}
        expect(got == want, 'expected the orchestrator affiliated %s (section 4), got %s (%s)' % (want, got, how))

    async def c_node_metadata(self):
        bad, seen = [], 0
        for node in PN.values():
            r = await self.o.disco_info(self.cfg['pubsub'], node)
            expect(r.type == 'result', 'expected disco#info of node %s, got %s' % (node, r.describe()))
            for x in r.child('query', NS_INFO).findall(q('x', NS_DATA)):
                f = parse_form(x)
                if f['form_type'] != 'http://jabber.org/protocol/pubsub#meta_data':
                    continue
                am = fval(f, 'pubsub#access_model')
                if am is not None:
                    seen += 1
                    if am != 'whitelist':
                        bad.append('%s access_model=%s' % (node, am))
                pi = fval(f, 'pubsub#persist_items')
                if pi is not None and pi not in ('0', 'false'):
                    bad.append('%s persist_items=%s' % (node, pi))
        expect(not bad, 'expected whitelist nodes that persist no item (section 4), got %s' % bad)

    async def c_no_items(self):
        kept = {}
        for node in PN.values():
            r = await self.o.iq(self.cfg['pubsub'], 'get', pubsub_el('items', {'node': node}))
            if r.type == 'result':
                items = r.child('pubsub', NS_PUBSUB).find(q('items', NS_PUBSUB))
                n = len(items.findall(q('item', NS_PUBSUB))) if items is not None else 0
                if n:
                    kept[node] = n
        expect(not kept, 'expected transient nodes: the XMPP server keeps no item (section 4), got items kept %s' % kept)

    async def c_orch_publish(self):
        st = ET.Element(q('status', NS_STATUS), {'type': 'online', 'component': str(self.o.boundjid),
                                                 'role': 'orchestrator', 'at': now()})
        p = ET.Element(q('pubsub', NS_PUBSUB))
        pub = ET.SubElement(p, q('publish', NS_PUBSUB), {'node': PN['status']})
        ET.SubElement(pub, q('item', NS_PUBSUB)).append(st)
        r = await self.o.iq(self.cfg['pubsub'], 'set', p)
        expect(r.type == 'result', 'expected an orchestrator (publisher on sacm/status) to publish its online status, got %s' % r.describe())

    async def c_orch_publish_posture(self):
        el = ET.Element(q('posture', NS_POSTURE), {'id': str(uuid.uuid4())})
        p = ET.Element(q('pubsub', NS_PUBSUB))
        pub = ET.SubElement(p, q('publish', NS_PUBSUB), {'node': PN['posture']})
        ET.SubElement(pub, q('item', NS_PUBSUB), {'id': el.get('id')}).append(el)
        r = await self.o.iq(self.cfg['pubsub'], 'set', p)
        expect(r.type == 'error' and r.conditions & {'forbidden', 'not-authorized'},
               'expected forbidden: an orchestrator is only a member of sacm/posture, got %s' % r.describe())

    async def c_create_forbidden(self):
        r = await self.o.iq(self.cfg['pubsub'], 'set', pubsub_el('create', {'node': 'sacm/conformance-' + uuid.uuid4().hex[:8]}))
        expect(r.type == 'error' and r.conditions & {'forbidden', 'not-allowed', 'not-authorized'},
               'expected the node creation refused (only the repository creates nodes, section 4), got %s' % r.describe())

    async def c_plain_no_affiliation(self):
        how, got = await self.effective_affiliations(self.p)
        grid = {n: a for n, a in got.items() if a not in (None, 'none')}
        expect(not grid, 'expected no affiliation for an account that advertises no role, got %s (%s)' % (grid, how))

    async def c_plain_subscribe(self):
        got = {}
        for node in PN.values():
            r = await self.p.iq(self.cfg['pubsub'], 'set', pubsub_el('subscribe', {'node': node, 'jid': self.p.boundjid.bare}))
            if r.type == 'result':
                got[node] = 'subscribed: ' + short(r.child('pubsub', NS_PUBSUB), 150)
        expect(not got, 'expected the subscriptions of an account with no role refused (whitelist), got %s' % got)

    # -- commands: common -----------------------------------------------------------------
    async def c_forbidden(self, jid, name):
        r = await self.p.cmd(jid, NODE[name], 'execute')
        error_check(r, ['forbidden'], "<forbidden/> for a non-peer executing %s" % name)

    async def c_forbidden_complete(self):
        # a session the orchestrator opened; the non-peer completes it
        first = await self.o.cmd(self.c1['jid'], NODE['collect'], 'execute')
        sid = first.sessionid or 'conformance-session'
        r = await self.p.cmd(self.c1['jid'], NODE['collect'], 'complete', sid,
                             submit_form(NODE['collect'], {'kinds': ['os'], 'correlation': str(uuid.uuid4())}))
        error_check(r, ['forbidden'], "<forbidden/> for a non-peer sending complete (sessionid %s)" % sid)

    async def c_unknown_node(self):
        r = await self.o.cmd(self.c1['jid'], NS_GRID + '#no-such-command', 'execute')
        error_check(r, ['item-not-found'], '<item-not-found/> for an unknown command node (XEP-0050)')

    async def c_bad_sessionid(self):
        r = await self.o.cmd(self.c1['jid'], NODE['collect'], 'complete', 'no-such-session-' + uuid.uuid4().hex[:6],
                             submit_form(NODE['collect'], {'kinds': ['os']}))
        error_check(r, ['bad-request', 'bad-sessionid'])

    async def c_execute_stage(self, jid, name):
        r = await self.o.cmd(jid, NODE[name], 'execute')
        expect(r.type == 'result' and r.status == 'executing' and r.form is not None and r.form['type'] == 'form'
               and r.form['form_type'] == NODE[name],
               "expected status='executing' with a form of FORM_TYPE %s (one stage, section 3), got %s" % (NODE[name], r.describe()))
        expect(r.actions is not None and 'complete' in r.actions['offered'],
               'expected <actions> offering <complete/>, got %s' % (r.actions,))
        self.state['form:' + name] = r.form
        return r

    async def c_bad_action(self):
        first = await self.o.cmd(self.c1['jid'], NODE['collect'], 'execute')
        expect(first.status == 'executing', 'cannot check: collect execute gave %s' % first.describe())
        offered = first.actions['offered'] if first.actions else []
        expect('next' not in offered, 'cannot check: next is offered (%s)' % offered)
        corr = str(uuid.uuid4())
        r = await self.o.cmd(self.c1['jid'], NODE['collect'], 'next', first.sessionid,
                             submit_form(NODE['collect'], {'kinds': ['os'], 'correlation': corr}))
        started = await self.wait_status(corr, ('collection-started',), 1.5) if r.type != 'error' else None
        error_check(r, ['bad-request', 'bad-action'],
                    "bad-request + <bad-action/> for action='next' when <actions> offers %s (XEP-0050 3.4)" % offered)
        expect(started is None, 'expected no collection for a refused action, got collection-started')

    async def c_wrong_form_type(self, jid, name, values):
        other = NODE['evaluate'] if name != 'evaluate' else NODE['collect']
        first, r = await self.o.run(jid, name, values, form_type=other, timeout=40)
        expect(r is not None, 'cannot check: execute gave %s' % first.describe())
        expect(r.type == 'error' and 'bad-request' in r.conditions,
               'expected bad-request for a %s submission whose FORM_TYPE is %s, got %s' % (name, other, r.describe()))

    # -- status ---------------------------------------------------------------------------
    async def c_status(self, name, jid):
        # section 3: a command without fields completes on execute, and its session is over
        first = await self.o.cmd(jid, NODE['status'], 'execute')
        expect(first.type == 'result' and first.status == 'completed' and first.form and first.form['type'] == 'result',
               "expected status='completed' with a result form on execute, got %s" % first.describe())
        self.state['status:' + name] = first.form
        r = await self.o.cmd(jid, NODE['status'], 'complete', first.sessionid, submit_form(NODE['status'], {}))
        expect(r.type == 'error' and 'bad-sessionid' in r.conditions,
               "expected <bad-sessionid/> for a request in the ended session, got %s" % r.describe())

    async def get_status(self, name, jid):
        """The status result form, by whichever way the role answers (for the field checks)."""
        first = await self.o.cmd(jid, NODE['status'], 'execute')
        if first.status == 'completed':
            return first.form
        if first.status == 'executing':
            r = await self.o.cmd(jid, NODE['status'], 'complete', first.sessionid, submit_form(NODE['status'], {}))
            return r.form
        raise Fail('cannot check: status gave %s' % first.describe())

    async def c_status_fields(self, name, jid):
        f = await self.get_status(name, jid)
        expect(f is not None, 'expected a result form')
        role = self.role_of(name)
        ints = {'collector': ['uptime', 'running', 'published'],
                'evaluator': ['uptime', 'rules', 'evaluations'],
                'repository': ['uptime', 'posture', 'results', 'changes', 'endpoints', 'uploads', 'refused']}[role]
        other = {'collector': ['role', 'endpoint', 'hostname', 'kinds', 'last_collection'],
                 'evaluator': ['role', 'policies', 'endpoints'],
                 'repository': ['role', 'members', 'upload_url']}[role]
        missing = [v for v in ints + other if v not in f['fields']]
        expect(not missing, 'expected fields %s (3.3), missing %s; got %s' % (ints + other, missing, f['order']))
        bad = ['%s=%r' % (v, fval(f, v)) for v in ints if not INT.match(fval(f, v) or '')]
        expect(not bad, "expected integer values (3.3: the role's counters), got %s" % bad)
        expect(fval(f, 'role') == role, 'expected role=%s, got %r' % (role, fval(f, 'role')))
        if role == 'collector':
            lc = fval(f, 'last_collection')
            expect(lc == '' or DATETIME.match(lc), 'expected last_collection an XEP-0082 date-time, got %r' % lc)
            expect(fval(f, 'endpoint') == self.c1['endpoint'], 'expected endpoint %s, got %r' % (self.c1['endpoint'], fval(f, 'endpoint')))
        if role == 'evaluator':
            pol = fvals(f, 'policies')
            expect(f['fields']['policies']['type'] == 'text-multi', "expected policies of type text-multi, got %r" % f['fields']['policies']['type'])
            expect(any(re.match(r'^%s [0-9a-f]{64}$' % re.escape(self.cfg['policy']['id']), l) for l in pol),
                   "expected a policies line 'conformance SHA256HEX' (ID VERSION), got %s" % pol)
        if role == 'repository':
            expect((fval(f, 'upload_url') or '').startswith('https://'), 'expected an https upload_url, got %r' % fval(f, 'upload_url'))
            expect(f['fields']['members']['type'] == 'text-multi', "expected members of type text-multi, got %r" % f['fields']['members']['type'])
            curr = [v for v in f['fields'] if v.startswith('current_')]
            expect(curr, 'expected current_pass, current_fail, ... fields, got %s' % f['order'])
            bad = ['%s=%r' % (v, fval(f, v)) for v in curr if not INT.match(fval(f, v) or '')]
            expect(not bad, 'expected integer current_* values, got %s' % bad)
            self.state['repo-status'] = f

    async def c_members(self):
        f = await self.get_status('repository', self.repo_full)
        lines = fvals(f, 'members') or []
        roles = {}
        for l in lines:
            parts = l.split(None, 1)
            roles[parts[0]] = parts[1] if len(parts) > 1 else ''
        d = self.cfg['domain']
        want = {'collector@' + d: 'collector', 'collector2@' + d: 'collector', 'evaluator@' + d: 'evaluator',
                'orchestrator@' + d: 'orchestrator'}
        bad = ['%s: %r' % (j, roles.get(j)) for j, r in want.items() if r not in (roles.get(j) or '').split()]
        expect(not bad, "expected members lines 'JID ROLES' for %s, got %s" % (sorted(want), lines))
        expect('plain@' + d not in roles, 'expected no member line for plain@%s (it advertises no role), got %s' % (d, lines))

    # -- collect --------------------------------------------------------------------------
    async def c_collect_form(self):
        f = self.state.get('form:collect')
        if f is None:
            await self.c_execute_stage(self.c1['jid'], 'collect')
            f = self.state['form:collect']
        fl = f['fields']
        expect('kinds' in fl and fl['kinds']['type'] == 'list-multi',
               'expected kinds (list-multi), got %s' % ({k: v['type'] for k, v in fl.items()}))
        expect(sorted(o for o in fl['kinds']['options'] if o) == sorted(self.c1['kinds']),
               'expected the kinds options to be the advertised kinds %s, got %s' % (sorted(self.c1['kinds']), fl['kinds']['options']))
        expect('correlation' in fl and fl['correlation']['type'] in ('text-single', None),
               'expected correlation (text-single), got %s' % fl.get('correlation'))
        expect('timeout' in fl, 'expected a timeout field, got %s' % f['order'])

    async def c_collect_timeout_datatype(self):
        f = self.state.get('form:collect')
        expect(f is not None, 'cannot check: no collect form')
        dt = f['fields'].get('timeout', {}).get('datatype')
        expect(dt == 'xs:integer', "expected the timeout field to declare <validate datatype='xs:integer'> (XEP-0122), got %r" % dt)

    async def c_collect_complete(self):
        corr = str(uuid.uuid4())
        self.state['corr1'] = corr
        first, r = await self.collect(self.c1['jid'], ['os', 'sysctl'], corr, 20)
        expect(r is not None, 'cannot check: execute gave %s' % first.describe())
        expect(r.type == 'result' and r.status == 'completed' and r.form is not None,
               "expected status='completed' with a result form, got %s" % r.describe())
        f = r.form
        got = (fval(f, 'correlation'), fval(f, 'endpoint'), sorted(fvals(f, 'kinds') or []))
        want = (corr, self.c1['endpoint'], ['os', 'sysctl'])
        expect(got == want, 'expected (correlation, endpoint, kinds) = %s, got %s' % (want, got))

    async def c_default_correlation(self):
        first, r = await self.o.run(self.c1['jid'], 'collect', {'kinds': ['os']})
        expect(r is not None and r.status == 'completed', 'expected completed, got %s' % (r or first).describe())
        corr = fval(r.form, 'correlation')
        expect(UUID4.match(corr or ''), 'expected a version 4 UUID correlation when the requester gives none (3), got %r' % corr)
        evs = await self.wait_posture(corr, 1, 15)
        expect(evs, 'expected the posture announced with that correlation, got none')

    async def c_posture_notifications(self):
        corr = self.need('corr1', 'the first collection')
        evs = await self.wait_posture(corr, 2)
        kinds = sorted(e['el'].get('kind') for e in evs)
        expect(kinds == ['os', 'sysctl'], 'expected one posture notification per kind (os, sysctl) within 20 s, got %s' % kinds)
        self.state['posture1'] = evs

    async def c_posture_attributes(self):
        evs = self.need('posture1', 'posture notifications')
        for e in evs:
            p = posture_of(e['el'])
            k = p.get('kind')
            expect(e['id'] == p.get('id'), '%s: expected item id = posture id, got %s vs %s' % (k, e['id'], p.get('id')))
            expect(UUID4.match(p.get('id') or ''), '%s: expected a version 4 UUID id, got %r' % (k, p.get('id')))
            expect(re.match(r'^[A-Za-z0-9_-]+$', k or ''), 'expected a kind name, got %r' % k)
            expect(p.get('endpoint') == self.c1['endpoint'], '%s: expected endpoint %s, got %r' % (k, self.c1['endpoint'], p.get('endpoint')))
            expect(p.get('hostname'), '%s: expected a hostname' % k)
            expect(DATETIME.match(p.get('collected') or ''), '%s: expected collected as XEP-0082 UTC with milliseconds, got %r' % (k, p.get('collected')))
            expect(p.get('collector') == self.c1['jid'], '%s: expected collector %s (full JID), got %r' % (k, self.c1['jid'], p.get('collector')))
            expect(p.get('correlation') == self.state['corr1'], '%s: expected the correlation, got %r' % (k, p.get('correlation')))
            expect(p.get('module-version'), '%s: expected module-version' % k)
            expect(p.get('status') == 'ok', "%s: expected status='ok', got %r" % (k, p.get('status')))
            expect(e['size'] <= NOTIFICATION_MAX, '%s: expected a notification of at most 16,384 bytes, got %d' % (k, e['size']))

    async def c_posture_inline(self):
        evs = self.need('posture1', 'posture notifications')
        for e in evs:
            p = posture_of(e['el'])
            expect(not p.get('href'), '%s: expected inline data (small), got a reference' % p['kind'])
            expect(p['_attrs'] or p['_items'], '%s: expected <attr>/<item> data, got none' % p['kind'])
            expect(len(ser(e['el'])) <= INLINE_MAX + 512, '%s: inline posture of %d bytes (at most 8,192)' % (p['kind'], len(ser(e['el']))))
            check_attr_types(p['_attrs'], p['kind'])
            for it in p['_items']:
                check_attr_types(it.findall(q('attr', NS_POSTURE)), p['kind'] + ' item')

    async def c_started(self):
        corr = self.need('corr1', 'the first collection')
        s = await self.wait_status(corr, ('collection-started',), 10)
        expect(s is not None, 'expected a collection-started status notification with the correlation, got none')
        expect(s.get('component') == self.c1['jid'] and s.get('role') == 'collector' and DATETIME.match(s.get('at') or ''),
               "expected component=%s role=collector at=date-time, got %s" % (self.c1['jid'], {k: s.get(k) for k in ('component', 'role', 'at')}))
        expect(s['attrs'].get('collection') and sorted(status_list(s, 'kinds') or []) == ['os', 'sysctl'],
               'expected fields collection and kinds (os, sysctl), got %s' % s['attrs'])
        self.state['collection1'] = s['attrs']['collection'][0]

    async def c_done(self):
        corr = self.need('corr1', 'the first collection')
        s = await self.wait_status(corr, ('collection-done', 'collection-failed'), 20)
        expect(s is not None, 'expected collection-done within 20 s, got none')
        self.state['done1'] = s
        expect(s['type'] == 'collection-done', 'expected collection-done, got %s (%s)' % (s['type'], s['text']))
        want = {'published': ['2'], 'failed': ['0'], 'spooled': ['0']}
        got = {k: s['attrs'].get(k) for k in want}
        expect(got == want and s['attrs'].get('collection') == [self.state.get('collection1')],
               'expected collection=%s %s, got %s' % (self.state.get('collection1'), want, s['attrs']))

    async def c_done_kinds(self):
        s = self.need('done1', 'collection-done')
        kinds = status_list(s, 'kinds')
        expect(kinds is not None and sorted(kinds) == ['os', 'sysctl'],
               "expected collection-done to carry field kinds (os, sysctl) as 4.3 documents, got fields %s" % sorted(s['attrs']))

    async def c_reference(self):
        corr = str(uuid.uuid4())
        first, r = await self.collect(self.c1['jid'], ['packages'], corr, 20)
        expect(r is not None and r.status == 'completed', 'cannot check: collect gave %s' % (r or first).describe())
        evs = await self.wait_posture(corr, 1)
        expect(evs, 'expected the packages posture notification, got none')
        e = evs[0]
        p = posture_of(e['el'])
        expect(p.get('href') and p.get('size') and p.get('digest'),
               'expected a reference (href, size, digest) for a posture over 8,192 bytes, got %s' % short(e['el']))
        expect(not p['_attrs'] and not p['_items'], 'expected no data beside a reference')
        expect(p['href'].startswith('https://'), 'expected an https href, got %r' % p['href'])
        expect(INT.match(p['size']) and DIGEST.match(p['digest']), 'expected size a byte count and digest sha-256:HEX, got %r %r' % (p['size'], p['digest']))
        expect(e['size'] <= NOTIFICATION_MAX, 'expected a notification of at most 16,384 bytes, got %d' % e['size'])
        self.state['ref'] = p

    async def c_fetch_reference(self):
        p = self.need('ref', 'the posture reference')
        status, h, body = self.https.request('GET', p['href'])
        expect(status == 200, 'expected 200 from GET href, got %d %r' % (status, body[:200]))
        expect((h.get('content-type') or '').split(';')[0].strip() == 'application/xml', 'expected Content-Type application/xml, got %r' % h.get('content-type'))
        expect(len(body) == int(p['size']), 'expected %s bytes (size), got %d' % (p['size'], len(body)))
        dig = hashlib.sha256(body).hexdigest()
        expect('sha-256:' + dig == p['digest'], 'expected digest %s, the body hashes to sha-256:%s' % (p['digest'], dig))
        expect(h.get('etag') == '"%s"' % dig, 'expected ETag "%s", got %r' % (dig, h.get('etag')))
        el = ET.fromstring(body)
        expect(el.tag == q('posture', NS_POSTURE) and el.get('id') == p['id'] and el.get('kind') == p['kind']
               and el.get('endpoint') == p['endpoint'],
               'expected the posture announced (id, kind, endpoint), got %s' % short(el, 200))
        expect(el.findall(q('item', NS_POSTURE)), 'expected the fetched posture to hold its items')
        self.state['etag'] = dig

    async def c_fetch_conditional(self):
        p = self.need('ref', 'the posture reference')
        dig = self.need('etag', 'the fetched posture')
        status, h, body = self.https.request('GET', p['href'], headers={'If-None-Match': '"%s"' % dig})
        expect(status == 304, 'expected 304 for If-None-Match with the ETag, got %d' % status)
        status, h, body = self.https.request('HEAD', p['href'])
        expect(status == 200 and body == b'', 'expected HEAD to give 200 and no body, got %d with %d bytes' % (status, len(body)))

    async def c_fetch_wrong_key(self):
        p = self.need('ref', 'the posture reference')
        u = urllib.parse.urlsplit(p['href'])
        qs = urllib.parse.parse_qs(u.query)
        key = qs.get('key', [''])[0]
        expect(key, 'expected a key in the href, got %r' % p['href'])
        wrong = ('0' if key[0] != '0' else '1') + key[1:]
        url = urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode({'key': wrong})))
        status, _, body = self.https.request('GET', url)
        expect(status == 404, 'expected 404 for a wrong key (5.4), got %d %r' % (status, body[:100]))
        url = urllib.parse.urlunsplit(u._replace(path=re.sub(r'[^/]+$', str(uuid.uuid4()), u.path)))
        status, _, body = self.https.request('GET', url)
        expect(status == 404, 'expected 404 for an unknown id (5.4), got %d %r' % (status, body[:100]))

    async def c_error_timeout(self):
        corr = str(uuid.uuid4())
        first, r = await self.collect(self.c1['jid'], [self.c1['slow_kind']], corr, 1)
        expect(r is not None and r.status == 'completed', 'cannot check: collect gave %s' % (r or first).describe())
        evs = await self.wait_posture(corr, 1, 20)
        expect(evs, 'expected an error posture for a kind over its 1 s budget, got none in 20 s')
        p = posture_of(evs[0]['el'])
        expect(p.get('status') == 'error' and p['_error'] and p['_error'][0] == 'timeout',
               "expected status='error' with <error condition='timeout'>, got %s" % short(evs[0]['el']))
        expect(not p['_attrs'] and not p['_items'], 'expected no data in an error posture')
        s = await self.wait_status(corr, ('collection-done', 'collection-failed'), 10)
        expect(s is not None, 'expected the end of the collection, got none')
        expect(s['attrs'].get('failed') == ['1'], 'expected failed=1 (kinds that could not be collected), got %s' % s['attrs'])

    async def c_no_kinds(self):
        corr = str(uuid.uuid4())
        self.state['corr-nokinds'] = corr
        advertised = self.need('kinds:collector2', "collector2's features")
        r = await self.o.run(self.c2['jid'], 'collect', {'correlation': corr})
        r = r[1] or r[0]
        expect(r.status == 'completed', 'expected completed, got %s' % r.describe())
        kinds = sorted(fvals(r.form, 'kinds') or [])
        self.state['nokinds-answer'] = kinds
        missing = [k for k in advertised if k not in kinds]
        expect(not missing, 'expected the answer to list every advertised kind %s and the ones not applicable (3.1: none means every kind the collector knows), got %s' % (advertised, kinds))

    async def c_no_kinds_unasked(self):
        corr = self.need('corr-nokinds', 'the collection without kinds')
        advertised = self.need('kinds:collector2', "collector2's features")
        s = await self.wait_status(corr, ('collection-done', 'collection-failed'), 20)
        await asyncio.sleep(1)
        answered = self.need('nokinds-answer', 'the answer of the collection without kinds')
        self.state['nokinds-posture'] = self.posture_events(corr)
        def what(e):
            p = posture_of(e['el'])
            if p['_error']:
                return "%s status='%s' condition='%s' (%s)" % (p['kind'], p.get('status'), p['_error'][0], p['_error'][1][:80])
            return "%s status='%s'" % (p['kind'], p.get('status'))
        # 3.1: exactly the kinds of the answer; those not advertised only as not-applicable errors
        unasked = [what(e) for e in self.posture_events(corr) if e['el'].get('kind') not in answered]
        expect(not unasked, 'expected posture only of the kinds the answer listed %s, got also %s' % (answered, unasked))
        wrong = [what(e) for e in self.posture_events(corr) if e['el'].get('kind') not in advertised
                 and not (posture_of(e['el'])['_error'] and posture_of(e['el'])['_error'][0] == 'not-applicable')]
        expect(not wrong, "expected the kinds not advertised reported as <error condition='not-applicable'>, got %s" % wrong)
        expect(s is not None, 'expected the end of the collection, got none')

    async def c_no_kinds_published(self):
        corr = self.need('corr-nokinds', 'the collection without kinds')
        advertised = self.need('kinds:collector2', "collector2's features")
        s = await self.wait_status(corr, ('collection-done', 'collection-failed'), 20)
        expect(s is not None, 'expected collection-done, got none')
        answered = self.need('nokinds-answer', 'the answer of the collection without kinds')
        got = s['attrs'].get('published')
        expect(got == [str(len(answered))], 'expected published=%d (the %d kinds the answer listed), got published=%s' % (
            len(answered), len(answered), got))

    async def c_bad_timeout(self, value):
        corr = str(uuid.uuid4())
        first, r = await self.collect(self.c1['jid'], ['os'], corr, value)
        expect(r is not None, 'cannot check: execute gave %s' % first.describe())
        started = None
        if r.type != 'error':
            started = await self.wait_status(corr, ('collection-failed',), 2)
        detail = ' (and later collection-failed: %s)' % started['text'] if started else ''
        want = "bad-request with <bad-payload/> and a text naming 'timeout' for timeout=%r (xs:integer, seconds)" % value
        expect(r.type == 'error' and 'bad-request' in r.conditions and 'bad-payload' in r.conditions and 'timeout' in r.text,
               'expected %s, got %s%s' % (want, r.describe(), detail))

    async def c_cancel_form(self):
        first = await self.o.cmd(self.c1['jid'], NODE['cancel'], 'execute')
        expect(first.status == 'executing' and first.form, 'expected a form, got %s' % first.describe())
        f = first.form['fields'].get('correlation')
        expect(f is not None and f['required'], 'expected a required correlation field, got %s' % f)

    async def c_cancel(self):
        corr = str(uuid.uuid4())
        first, r = await self.collect(self.c1['jid'], [self.c1['slow_kind']], corr, 30)
        expect(r is not None and r.status == 'completed', 'cannot check: collect gave %s' % (r or first).describe())
        await asyncio.sleep(0.5)
        f1, c = await self.o.run(self.c1['jid'], 'cancel', {'correlation': corr})
        expect(c is not None and c.type == 'result' and c.status == 'completed',
               'expected cancel to complete, got %s' % (c or f1).describe())
        evs = await self.wait_posture(corr, 1, 10)
        expect(evs, 'expected the cancelled kind announced as error posture, got none in 10 s')
        p = posture_of(evs[0]['el'])
        expect(p.get('status') == 'error' and p['_error'] and p['_error'][0] == 'cancelled',
               "expected <error condition='cancelled'>, got %s" % short(evs[0]['el']))
        s = await self.wait_status(corr, ('collection-done', 'collection-failed'), 10)
        self.state['failed-status'] = s
        expect(s is not None and s['type'] == 'collection-failed', 'expected collection-failed, got %s' % (s and s['type']))

    async def c_failed_fields(self):
        s = self.need('failed-status', 'the end of the cancelled collection')
        want = ['collection', 'kinds', 'published', 'failed', 'spooled']
        missing = [k for k in want if k not in s['attrs']]
        expect(not missing, '%s: expected fields %s (4.3), missing %s, got %s' % (s['type'], want, missing, s['attrs']))
        expect(status_list(s, 'kinds') == [self.c1['slow_kind']] and s['attrs']['failed'] == ['1'],
               'expected kinds=%s failed=1, got %s' % (self.c1['slow_kind'], s['attrs']))

    async def c_cancel_unknown(self):
        f1, c = await self.o.run(self.c1['jid'], 'cancel', {'correlation': str(uuid.uuid4())})
        expect(c is not None, 'cannot check: %s' % f1.describe())
        error_check(c, ['item-not-found'])

    async def c_cancel_missing(self):
        f1, c = await self.o.run(self.c1['jid'], 'cancel', {})
        expect(c is not None, 'cannot check: %s' % f1.describe())
        bad_payload_check(c, 'correlation')

    # -- evaluate -------------------------------------------------------------------------
    async def c_evaluate_form(self):
        await self.c_execute_stage(self.cfg['evaluator'], 'evaluate')
        f = self.state['form:evaluate']['fields']
        want = {'endpoints': 'text-multi', 'correlation': 'text-single', 'policies': 'list-multi'}
        got = {k: ((f[k]['type'] or 'text-single') if k in f else 'missing') for k in want}
        expect(got == want, 'expected fields %s, got %s' % (want, got))
        expect(self.cfg['policy']['id'] in f['policies']['options'], 'expected the policy among the options, got %s' % f['policies']['options'])

    async def c_evaluate(self):
        corr = str(uuid.uuid4())
        self.state['corr3'] = corr
        first, r = await self.collect(self.c1['jid'], ['os', 'sysctl', 'packages', self.c1['slow_kind']], corr, 1)
        expect(r is not None and r.status == 'completed', 'cannot check: collect gave %s' % (r or first).describe())
        s = await self.wait_status(corr, ('collection-done', 'collection-failed'), 20)
        expect(s is not None, 'cannot check: the collection did not end')
        self.state['posture3'] = self.posture_events(corr)
        first, r = await self.o.run(self.cfg['evaluator'], 'evaluate', {'endpoints': [self.c1['endpoint']], 'correlation': corr}, timeout=40)
        expect(r is not None and r.type == 'result' and r.status == 'completed' and r.form,
               'expected completed with a result form, got %s' % (r or first).describe())
        self.state['eval3'] = r.form
        f = r.form
        expect(fval(f, 'correlation') == corr and fvals(f, 'endpoints') == [self.c1['endpoint']],
               'expected correlation and endpoints echoed, got %s %s' % (fval(f, 'correlation'), fvals(f, 'endpoints')))
        names = ['total', 'pass', 'fail', 'error', 'notapplicable', 'notchecked']
        got = {k: fval(f, k) for k in names}
        expect(all(INT.match(v or '') for v in got.values()), 'expected integer totals, got %s' % got)
        # conf-os pass, conf-sysctl-fails fail, conf-packages pass, conf-sshd error (timeout),
        # conf-users notchecked (never collected), conf-evidence pass
        want = {'total': '6', 'pass': '3', 'fail': '1', 'error': '1', 'notapplicable': '0', 'notchecked': '1'}
        expect(got == want, 'expected %s, got %s' % (want, got))

    async def c_evaluate_failed_field(self):
        f = self.need('eval3', 'the evaluation')
        expect('failed' in f['fields'], "expected the answer to have the field failed (text-multi, empty here), got fields %s" % f['order'])
        expect(f['fields']['failed']['type'] == 'text-multi' and fvals(f, 'failed') == [],
               'expected failed text-multi and empty, got %s' % f['fields']['failed'])

    async def c_results_notification(self):
        corr = self.need('corr3', 'the evaluation')
        evs = await self.wait_results(corr, 1, 20)
        expect(evs, 'expected a result set notification with the correlation, got none')
        el = evs[0]['el']
        a = el.attrib
        expect(evs[0]['id'] == a.get('id') and UUID4.match(a.get('id') or ''), 'expected item id = set id (UUID), got %s / %s' % (evs[0]['id'], a.get('id')))
        expect(a.get('endpoint') == self.c1['endpoint'] and a.get('hostname') and a.get('evaluator') == self.cfg['evaluator']
               and DATETIME.match(a.get('evaluated') or ''),
               'expected endpoint, hostname, evaluator (full JID %s), evaluated, got %s' % (self.cfg['evaluator'], dict(a)))
        f = self.need('eval3', 'the evaluation')
        tot = {k: a.get(k) for k in ('total', 'pass', 'fail', 'error', 'notapplicable', 'notchecked')}
        expect(tot == {k: fval(f, k) for k in tot}, 'expected the totals of the command %s, got %s' % ({k: fval(f, k) for k in tot}, tot))
        expect(evs[0]['size'] <= NOTIFICATION_MAX, 'expected a notification of at most 16,384 bytes, got %d' % evs[0]['size'])
        self.state['results3'] = el

    async def c_results_reference(self):
        el = self.need('results3', 'the result set notification')
        a = el.attrib
        expect(a.get('href') and a.get('size') and DIGEST.match(a.get('digest') or ''),
               'expected a reference for a set of 70 evidence lines (> 8,192 bytes), got %s' % short(el))
        status, h, body = self.https.request('GET', a['href'])
        expect(status == 200, 'expected 200, got %d' % status)
        expect(len(body) == int(a['size']) and 'sha-256:' + hashlib.sha256(body).hexdigest() == a['digest'],
               'expected %s bytes with digest %s, got %d bytes with sha-256:%s' % (a['size'], a['digest'], len(body), hashlib.sha256(body).hexdigest()))
        doc = ET.fromstring(body)
        expect(doc.tag == q('results', NS_RESULT) and doc.get('id') == a['id'], 'expected the result set %s, got %s' % (a['id'], short(doc, 150)))
        self.state['resultset3'] = doc

    def results3(self):
        doc = self.state.get('resultset3')
        if doc is None:
            el = self.need('results3', 'the result set')
            doc = el if el.findall(q('result', NS_RESULT)) else None
        if doc is None:
            raise Fail('cannot check: no result children')
        return {r.get('rule'): r for r in doc.findall(q('result', NS_RESULT))}

    async def c_result_attributes(self):
        rs = self.results3()
        corr = self.state['corr3']
        posture_ids = {e['el'].get('id') for e in self.state.get('posture3', [])}
        for rule, r in rs.items():
            a = r.attrib
            expect(UUID4.match(a.get('id') or ''), '%s: expected a UUID id, got %r' % (rule, a.get('id')))
            for k in ('endpoint', 'hostname', 'rule', 'policy', 'policy-version', 'result', 'severity', 'evaluated', 'evaluator', 'correlation', 'posture'):
                expect(a.get(k), '%s: expected attribute %s, got %s' % (rule, k, dict(a)))
            expect(a['policy'] == self.cfg['policy']['id'] and HEX64.match(a['policy-version']), '%s: expected policy and a SHA-256 hex policy-version, got %s %s' % (rule, a['policy'], a['policy-version']))
            expect(a['result'] in RESULT_VALUES and a['severity'] in SEVERITIES, '%s: result %r severity %r' % (rule, a['result'], a['severity']))
            expect(DATETIME.match(a['evaluated']) and a['evaluator'] == self.cfg['evaluator'] and a['correlation'] == corr,
                   '%s: evaluated/evaluator/correlation %s' % (rule, dict(a)))
            ids = a['posture'].split(' ')
            expect(all(i in posture_ids for i in ids), '%s: expected posture ids of the collection %s, got %s' % (rule, sorted(posture_ids), ids))
            expect(r.findtext(q('title', NS_RESULT)), '%s: expected a <title>' % rule)

    async def c_result_values(self):
        rs = self.results3()
        R = self.cfg['policy']['rules']
        want = {R['os']: 'pass', R['sysctl']: 'fail', R['packages']: 'pass', R['evidence']: 'pass'}
        got = {k: rs[k].get('result') if k in rs else None for k in want}
        expect(got == want, 'expected %s, got %s' % (want, got))

    async def c_result_notchecked(self):
        rs = self.results3()
        r = rs.get(self.cfg['policy']['rules']['users'])
        expect(r is not None and r.get('result') == 'notchecked', "expected notchecked for a rule whose kind was not collected, got %s" % (r is not None and r.get('result')))

    async def c_result_error_posture(self):
        rs = self.results3()
        r = rs.get(self.cfg['policy']['rules']['sshd'])
        ev = [e.text or '' for e in r.findall(q('evidence', NS_RESULT))] if r is not None else []
        err = [posture_of(e['el'])['_error'] for e in self.state.get('posture3', []) if e['el'].get('kind') == self.c1['slow_kind']]
        expect(err and err[0], 'cannot check: no error posture of %s in the collection' % self.c1['slow_kind'])
        cond, text = err[0]
        expect(r is not None and r.get('result') == 'error' and any(cond in e and text.strip() in e for e in ev),
               "expected result='error' with evidence naming the condition %r and the text %r (4.2), got %s %s" % (
                   cond, text, r is not None and r.get('result'), ev[:2]))

    async def c_result_evidence(self):
        rs = self.results3()
        r = rs.get(self.cfg['policy']['rules']['evidence'])
        ev = [(e.text or '') for e in r.findall(q('evidence', NS_RESULT))]
        expect(0 < len(ev) <= 64, 'expected 1..64 evidence lines (the rule gave 70), got %d' % len(ev))
        long = [len(e.encode()) for e in ev if len(e.encode()) > 4096]
        expect(not long, 'expected evidence lines of at most 4096 bytes, got %s' % long)
        expect(len(ev[0].encode()) <= 1100 and ev[0].endswith(' bytes in all)') and '... (' in ev[0],
               "expected the 5000-byte line cut to 1,024 bytes and ended with '... (N bytes in all)' (4.2), got %d bytes ending %r" % (len(ev[0].encode()), ev[0][-40:]))

    async def c_evaluation_done(self):
        corr = self.need('corr3', 'the evaluation')
        s = await self.wait_status(corr, ('evaluation-done',), 10)
        expect(s is not None, 'expected an evaluation-done status notification, got none')
        f = self.state['eval3']
        want = {'endpoint': [self.c1['endpoint']], 'delivery': ['delivered']}
        for k in ('total', 'pass', 'fail', 'error'):
            want[k] = [fval(f, k)]
        got = {k: s['attrs'].get(k) for k in want}
        expect(got == want and s.get('role') == 'evaluator' and s.get('component') == self.cfg['evaluator'],
               'expected fields %s from %s, got %s' % (want, self.cfg['evaluator'], {**got, 'component': s.get('component')}))

    async def c_evaluate_unknown_endpoint(self):
        first, r = await self.o.run(self.cfg['evaluator'], 'evaluate', {'endpoints': ['no-such-endpoint']}, timeout=40)
        expect(r is not None and r.status == 'completed', 'expected completed, got %s' % (r or first).describe())
        expect(fvals(r.form, 'failed') == ['no-such-endpoint'],
               "expected failed = ['no-such-endpoint'] (the endpoints without posture, 3.2), got %s" % fvals(r.form, 'failed'))

    async def c_evaluate_unknown_correlation(self):
        corr = str(uuid.uuid4())
        first, r = await self.o.run(self.cfg['evaluator'], 'evaluate', {'correlation': corr}, timeout=40)
        evs = await self.wait_results(corr, 1, 3)
        if r is not None and r.type == 'error':
            expect('item-not-found' in r.conditions, 'expected item-not-found or an empty evaluation, got %s' % r.describe())
        else:
            expect(r is not None and r.status == 'completed', 'expected completed, got %s' % (r or first).describe())
            expect(fval(r.form, 'total') == '0' and not evs,
                   'expected nothing evaluated for a correlation no posture has (3.2: the posture of that correlation), '
                   'got total=%s and %d result set(s) stamped with the made-up correlation' % (fval(r.form, 'total'), len(evs)))

    async def c_notapplicable(self):
        # posture the collector reported not-applicable gives notapplicable (4.2)
        try:
            os.remove(self.c2['vanishing_file'])
        except FileNotFoundError:
            pass
        corr = str(uuid.uuid4())
        first, r = await self.collect(self.c2['jid'], [self.c2['vanishing_kind']], corr, 10)
        expect(r is not None and r.status == 'completed', 'cannot check: collect gave %s' % (r or first).describe())
        evs = await self.wait_posture(corr, 1, 15)
        expect(evs, 'cannot check: no posture')
        p = posture_of(evs[0]['el'])
        expect(p['_error'] and p['_error'][0] == 'not-applicable',
               'cannot check: expected a not-applicable posture once the package database is gone, got %s' % short(evs[0]['el']))
        await self.wait_status(corr, ('collection-done', 'collection-failed'), 10)
        first, r = await self.o.run(self.cfg['evaluator'], 'evaluate', {'endpoints': [self.c2['endpoint']], 'correlation': corr}, timeout=30)
        expect(r is not None and r.status == 'completed', 'expected completed, got %s' % (r or first).describe())
        sets = await self.wait_results(corr, 1, 15)
        expect(sets, 'expected a result set, got none')
        doc = sets[0]['el']
        if doc.get('href'):
            _, _, body = self.https.request('GET', doc.get('href'))
            doc = ET.fromstring(body)
        res = {x.get('rule'): x for x in doc.findall(q('result', NS_RESULT))}
        x = res.get(self.cfg['policy']['rules']['packages'])
        ev = [e.text for e in x.findall(q('evidence', NS_RESULT))] if x is not None else []
        expect(x is not None and x.get('result') == 'notapplicable',
               "expected notapplicable for posture reported not-applicable (4.2), got %s %s" % (x is not None and x.get('result'), ev[:1]))

    # -- query and get --------------------------------------------------------------------
    async def query(self, values):
        first, r = await self.o.run(self.repo_full, 'query', values)
        expect(r is not None, 'cannot check: query execute gave %s' % first.describe())
        return r

    async def c_query_form(self):
        await self.c_execute_stage(self.repo_full, 'query')
        f = self.state['form:query']['fields']
        want = ['type', 'endpoint', 'kind', 'attribute', 'rule', 'policy', 'result', 'correlation', 'since', 'until', 'max', 'after']
        missing = [w for w in want if w not in f]
        expect(not missing, 'expected fields %s, missing %s' % (want, missing))
        expect(sorted(o for o in f['type']['options'] if o) == ['history', 'posture', 'results'],
               'expected type options posture, results, history, got %s' % f['type']['options'])

    async def c_query_posture(self):
        corr = self.need('corr3', 'the evaluation')
        r = await self.query({'type': 'posture', 'correlation': corr})
        expect(r.type == 'result' and r.form, 'expected a result form, got %s' % r.describe())
        f = r.form
        expect('count' in f['fields'] and 'next' in f['fields'] and f['reported'],
               'expected count, next and <reported> (a multi-item form), got %s / %s' % (f['order'], f['reported']))
        expect(fval(f, 'count') == str(len(f['items'])) == '4', 'expected count=4 and 4 items (os, sysctl, packages, sshd), got count=%s, %d items' % (fval(f, 'count'), len(f['items'])))
        expect(fval(f, 'next') == '', 'expected next empty on the last page, got %r' % fval(f, 'next'))
        ids = {e['el'].get('id') for e in self.state.get('posture3', [])}
        got = {(it.get('id') or [''])[0] for it in f['items']}
        expect(got == ids, 'expected the ids of the posture announced %s, got %s' % (sorted(ids), sorted(got)))
        self.state['some-posture-id'] = sorted(ids)[0]

    async def c_query_attribute(self):
        r = await self.query({'type': 'posture', 'endpoint': self.c1['endpoint'], 'kind': 'os', 'attribute': 'hostname'})
        expect(r.type == 'result' and r.form and r.form['items'], 'expected rows, got %s' % r.describe())
        expect('value' in r.form['reported'] and all((it.get('value') or [''])[0] for it in r.form['items']),
               'expected a value column with the attribute, got %s' % r.form['reported'])

    async def c_query_results(self):
        corr = self.need('corr3', 'the evaluation')
        r = await self.query({'type': 'results', 'correlation': corr})
        expect(r.type == 'result' and r.form, 'expected a result form, got %s' % r.describe())
        if r.form['items']:
            self.state['some-result-id'] = (r.form['items'][0].get('id') or [None])[0]
        want = ['id', 'endpoint', 'hostname', 'rule', 'policy', 'policy_version', 'result', 'severity', 'evaluated', 'evaluator', 'correlation']
        missing = [w for w in want if w not in r.form['reported']]
        expect(not missing, 'expected columns %s, missing %s' % (want, missing))
        sets = [e for e in self.o.events if e['node'] == PN['results'] and e['el'] is not None and e['el'].get('correlation') == corr]
        n = sum(int(e['el'].get('total') or 0) for e in sets)
        expect(fval(r.form, 'count') == str(n) and len(r.form['items']) == n,
               'expected the %d results of the %d result sets announced for the correlation, got count=%s, %d items' % (
                   n, len(sets), fval(r.form, 'count'), len(r.form['items'])))

    async def c_query_history(self):
        r = await self.query({'type': 'history', 'endpoint': self.c1['endpoint']})
        expect(r.type == 'result' and r.form and r.form['items'], 'expected history rows, got %s' % r.describe())

    async def c_query_filters(self):
        corr = self.need('corr3', 'the evaluation')
        rule = self.cfg['policy']['rules']['os']
        r = await self.query({'type': 'results', 'correlation': corr, 'rule': rule, 'result': 'pass',
                              'policy': self.cfg['policy']['id']})
        expect(r.type == 'result' and r.form, 'expected a result form, got %s' % r.describe())
        rows = [(it.get('rule', [''])[0], it.get('result', [''])[0]) for it in r.form['items']]
        n = len([e for e in self.o.events if e['node'] == PN['results'] and e['el'] is not None and e['el'].get('correlation') == corr])
        expect(rows == [(rule, 'pass')] * n, 'expected %d row(s) (%s, pass), one per result set of the correlation, got %s' % (n, rule, rows))
        r = await self.query({'type': 'posture', 'correlation': corr, 'since': '2999-01-01T00:00:00.000Z'})
        expect(r.type == 'result' and r.form and fval(r.form, 'count') == '0', 'expected no posture since 2999, got %s' % (
            r.describe() if r.type != 'result' else 'count=%s' % fval(r.form, 'count')))
        r = await self.query({'type': 'posture', 'correlation': corr, 'until': '2000-01-01T00:00:00.000Z'})
        expect(r.type == 'result' and r.form and fval(r.form, 'count') == '0', 'expected no posture until 2000, got %s' % (
            r.describe() if r.type != 'result' else 'count=%s' % fval(r.form, 'count')))

    async def c_evaluate_policies(self):
        corr = self.need('corr3', 'the evaluation')
        first, r = await self.o.run(self.cfg['evaluator'], 'evaluate', {'endpoints': [self.c1['endpoint']], 'correlation': corr,
                                                                      'policies': [self.cfg['policy']['id']]}, timeout=40)
        expect(r is not None and r.status == 'completed', 'expected completed, got %s' % (r or first).describe())
        expect(fval(r.form, 'total') == '6', 'expected total=6 for the one policy, got %s' % fval(r.form, 'total'))

    async def c_query_paging(self):
        seen, after, pages = [], None, 0
        while pages < 20:
            r = await self.query({'type': 'posture', 'endpoint': self.c1['endpoint'], 'max': '2', 'after': after})
            expect(r.type == 'result' and r.form, 'expected a page, got %s' % r.describe())
            expect(len(r.form['items']) <= 2, 'expected at most max=2 rows, got %d' % len(r.form['items']))
            seen += [it['id'][0] for it in r.form['items']]
            pages += 1
            after = fval(r.form, 'next')
            if not after:
                break
        expect(pages >= 2 and len(seen) == len(set(seen)), 'expected several pages of distinct rows, got %d pages, %d rows (%d distinct)' % (pages, len(seen), len(set(seen))))

    async def c_query_bad(self, values, field):
        r = await self.query(values)
        bad_payload_check(r, field)

    async def c_get(self, key, tag, ns):
        i = self.need(key, 'an id from a query')
        first, r = await self.o.run(self.repo_full, 'get', {'id': i})
        expect(r is not None and r.type == 'result' and r.status == 'completed', 'expected completed, got %s' % (r or first).describe())
        el = r.cmd.find(q(tag, ns))
        expect(el is not None and el.get('id') == i, 'expected the stored <%s> with id %s as the payload, got %s' % (tag, i, short(r.cmd, 200)))
        if tag == 'posture':
            ann = [e['el'] for e in self.state.get('posture3', []) if e['el'].get('id') == i]
            if ann and not ann[0].get('href'):
                a, b = dict(ann[0].attrib), dict(el.attrib)
                expect(a == b and len(list(ann[0])) == len(list(el)),
                       'expected the posture exactly as announced, attributes %s vs %s, %d vs %d children' % (a, b, len(list(ann[0])), len(list(el))))

    async def c_get_unknown(self):
        first, r = await self.o.run(self.repo_full, 'get', {'id': str(uuid.uuid4())})
        expect(r is not None, 'cannot check: %s' % first.describe())
        error_check(r, ['item-not-found'])

    # -- uploads (5.3) --------------------------------------------------------------------
    async def slot(self, acc, filename, size, ctype='application/xml'):
        attrs = {'filename': filename, 'content-type': ctype}
        if size is not None:
            attrs['size'] = str(size)
        return await acc.iq(self.repo_full, 'get', ET.Element(q('request', NS_UPLOAD), attrs))

    async def c_slot_forbidden(self, acc, who):
        r = await self.slot(acc, str(uuid.uuid4()) + '.xml', 100)
        error_check(r, ['forbidden'], '<forbidden/> for a slot asked by %s (only collectors and evaluators)' % who)

    async def c_slot_too_large(self):
        mx = self.need('max', 'max-file-size')
        r = await self.slot(self.ca, str(uuid.uuid4()) + '.xml', mx + 1)
        error_check(r, ['not-acceptable'])
        err = r.xml.find(q('error', 'jabber:client'))
        ftl = err.find(q('file-too-large', NS_UPLOAD))
        got = ftl.findtext(q('max-file-size', NS_UPLOAD)) if ftl is not None else None
        expect(got == str(mx), 'expected <file-too-large><max-file-size>%d</max-file-size></file-too-large>, got %s' % (mx, short(err)))

    async def c_slot_malformed(self):
        r = await self.slot(self.ca, str(uuid.uuid4()) + '.xml', None)
        error_check(r, ['bad-request'], 'bad-request for a slot request without size')

    def posture_set(self, set_id, collector, endpoint='conformance-upload-endpoint'):
        ps = ET.Element(q('posture-set', NS_POSTURE), {'id': set_id, 'collector': collector, 'endpoint': endpoint,
                                                     'hostname': 'conformance', 'correlation': str(uuid.uuid4())})
        p = ET.SubElement(ps, q('posture', NS_POSTURE), {
            'id': str(uuid.uuid4()), 'kind': 'os', 'endpoint': endpoint, 'hostname': 'conformance', 'collected': now(),
            'collector': collector, 'correlation': ps.get('correlation'), 'module-version': '1', 'status': 'ok'})
        ET.SubElement(p, q('attr', NS_POSTURE), {'name': 'hostname'}).text = 'conformance'
        return ET.tostring(ps, encoding='utf-8')

    async def get_slot(self, set_id, size):
        r = await self.slot(self.ca, set_id + '.xml', size)
        expect(r.type == 'result', 'expected a slot, got %s' % r.describe())
        s = r.child('slot', NS_UPLOAD)
        put = s.find(q('put', NS_UPLOAD)).get('url')
        get = s.find(q('get', NS_UPLOAD)).get('url')
        return put, get

    def put(self, url, body, ctype='application/xml'):
        return self.https.request('PUT', url, body=body, headers={'Content-Type': ctype, 'Content-Length': str(len(body))})

    async def c_slot(self):
        set_id = str(uuid.uuid4())
        body = self.posture_set(set_id, str(self.ca.boundjid))
        put, get = await self.get_slot(set_id, len(body))
        expect(put.startswith('https://') and get.startswith('https://'), 'expected https put and get URLs, got %r %r' % (put, get))
        self.state['upload'] = (set_id, body, put, get)

    async def c_put_own(self):
        set_id, body, put, get = self.need('upload', 'a slot')
        status, h, data = self.put(put, body)
        expect(status == 201, 'expected 201 Created for a valid posture set of this collector, got %d %r' % (status, data[:200]))
        rc = ET.fromstring(data)
        expect(rc.tag == q('receipt', NS_GRID) and rc.get('id') == set_id and rc.get('stored') == '1',
               'expected <receipt id=%s stored=1>, got %s' % (set_id, short(rc)))
        contents = rc.findall(q('content', NS_GRID))
        expect(len(contents) == 1 and all(contents[0].get(k) for k in ('id', 'href', 'size', 'digest')),
               'expected one <content id href size digest>, got %s' % short(rc))
        expect(h.get('location'), 'expected a Location header')
        self.state['receipt'] = contents[0]

    async def c_put_again(self):
        set_id, body, put, get = self.need('upload', 'a slot')
        b = await self.refused_now()
        status, _, data = self.put(put, body)
        self.refusal_log.append(('403 for a used slot', await self.refused_now() - b))
        expect(status == 403, 'expected 403 for a slot used a second time (no valid slot), got %d' % status)
        put2, _ = await self.get_slot(set_id, len(body))
        status, _, data = self.put(put2, body)
        expect(status == 200, 'expected 200 OK (everything already stored) for the same set again, got %d %r' % (status, data[:200]))
        rc = ET.fromstring(data)
        expect(rc.get('stored') == '0' and rc.get('duplicates') == '1', 'expected a receipt stored=0 duplicates=1, got %s' % short(rc))

    async def c_fetch_slot_get(self):
        set_id, body, put, get = self.need('upload', 'a slot')
        status, h, data = self.https.request('GET', get)
        expect(status == 200, "expected 200 from the slot's get URL, got %d %r" % (status, data[:200]))
        el = ET.fromstring(data)
        expect(el.tag == q('posture-set', NS_POSTURE) and el.get('id') == set_id,
               "expected the collection's posture set %s (5.4), got %s" % (set_id, short(el, 150)))

    async def c_fetch_receipt(self):
        c = self.need('receipt', 'a receipt')
        status, _, body = self.https.request('GET', c.get('href'))
        expect(status == 200 and len(body) == int(c.get('size')) and 'sha-256:' + hashlib.sha256(body).hexdigest() == c.get('digest'),
               'expected the stored posture with the receipt size and digest, got %d, %d bytes' % (status, len(body)))

    async def c_put_other_collector(self):
        set_id = str(uuid.uuid4())
        body = self.posture_set(set_id, self.c2['jid'])
        put, _ = await self.get_slot(set_id, len(body))
        b = await self.refused_now()
        status, h, data = self.put(put, body)
        self.refusal_log.append(('403 for another collector', await self.refused_now() - b))
        expect(status == 403, 'expected 403 for a posture set naming another collector (%s), got %d %r' % (self.c2['jid'], status, data[:200]))
        expect((h.get('content-type') or '').startswith('text/plain') and data, 'expected a text/plain reason, got %r' % h.get('content-type'))

    async def c_put_wrong_type(self):
        set_id = str(uuid.uuid4())
        body = self.posture_set(set_id, str(self.ca.boundjid))
        put, _ = await self.get_slot(set_id, len(body))
        b = await self.refused_now()
        status, _, data = self.put(put, body, 'text/plain')
        self.refusal_log.append(('415 for text/plain', await self.refused_now() - b))
        expect(status == 415, 'expected 415 for Content-Type text/plain, got %d %r' % (status, data[:200]))

    async def c_put_wrong_id(self):
        set_id = str(uuid.uuid4())
        body = self.posture_set(str(uuid.uuid4()), str(self.ca.boundjid))
        put, _ = await self.get_slot(set_id, len(body))
        b = await self.refused_now()
        status, _, data = self.put(put, body)
        self.refusal_log.append(("400 for another id than the slot's", await self.refused_now() - b))
        expect(status == 400, "expected 400 for a document whose id is not the slot's, got %d %r" % (status, data[:200]))

    async def refusing_put(self, name, body, slot_size=None, ctype='application/xml', slot_id=None):
        set_id = slot_id or str(uuid.uuid4())
        put, _ = await self.get_slot(set_id, slot_size if slot_size is not None else len(body(set_id)))
        b = await self.refused_now()
        status, h, data = self.put(put, body(set_id), ctype)
        self.refusal_log.append((name, await self.refused_now() - b))
        return status, h, data

    async def c_put_wrong_size(self):
        me = str(self.ca.boundjid)
        status, _, data = await self.refusing_put("400 for a size other than the slot's", lambda i: self.posture_set(i, me),
                                                  slot_size=len(self.posture_set(str(uuid.uuid4()), me)) + 10)
        expect(status == 400, "expected 400 for a body of another size than the slot's, got %d %r" % (status, data[:200]))

    async def c_put_not_well_formed(self):
        status, _, data = await self.refusing_put('400 for a document not well-formed', lambda i: b'<posture-set xmlns="urn:sacmrun:posture:1"')
        expect(status == 400, 'expected 400 for a document that is not well-formed, got %d %r' % (status, data[:200]))

    async def c_put_not_a_set(self):
        status, _, data = await self.refusing_put('415 for a document that is no set', lambda i: ('<note xmlns="urn:example" id="%s"/>' % i).encode())
        expect(status == 415, 'expected 415 for application/xml that is not a posture set or result set, got %d %r' % (status, data[:200]))

    async def c_put_child_other(self):
        me = str(self.ca.boundjid)

        def body(i):
            el = ET.fromstring(self.posture_set(i, me))
            el.find(q('posture', NS_POSTURE)).set('collector', self.c2['jid'])
            return ET.tostring(el, encoding='utf-8')
        status, _, data = await self.refusing_put('403 for a posture naming another collector', body)
        expect(status == 403, "expected 403 for a set of this collector holding a posture of %s (5.3: each posture's collector), got %d %r" % (
            self.c2['jid'], status, data[:200]))

    async def refused_now(self):
        f = await self.get_status('repository', self.repo_full)
        v = fval(f, 'refused')
        return int(v) if v and INT.match(v) else -10 ** 6

    async def c_refused_counted(self):
        expect(len(self.refusal_log) == 8, 'cannot check: %d of the 8 refusals were made' % len(self.refusal_log))
        missed = [what for what, d in self.refusal_log if d < 1]
        expect(not missed, "expected every refusal (400, 403, 413, 415) counted in the status command's refused (5.3), "
               "not counted: %s" % ', '.join(missed))

    async def c_slot_limit(self):
        got = None
        for i in range(70):
            r = await self.slot(self.ca, str(uuid.uuid4()) + '.xml', 100)
            if r.type == 'error':
                got = (i, r)
                break
        expect(got is not None, 'expected resource-constraint after 64 outstanding slots, got 70 slots')
        expect(got[0] == 64 and 'resource-constraint' in got[1].conditions,
               'expected resource-constraint for slot 65, got %s at slot %d' % (got[1].describe(), got[0] + 1))

    # -- policies (4.3, 2.2) ----------------------------------------------------------------
    def wait_policy_status(self, typ, pred, timeout=10):
        return self.o.wait_events(lambda e: e['node'] == PN['status'] and e['el'].tag == q('status', NS_STATUS)
                                  and e['el'].get('type') == typ and pred(status_of(e['el'])), 1, timeout)

    async def c_policy_loaded(self):
        path = os.path.join(self.cfg['policies_dir'], 'conformance_extra.lua')
        text = EXTRA_POLICY.encode()
        ver_before = self.caps_of(self.cfg['evaluator'])
        self.state['ver-before'] = ver_before
        with open(path, 'wb') as f:
            f.write(text)
        self.state['extra-path'] = path
        evs = await self.wait_policy_status('policy-loaded', lambda s: s['attrs'].get('policy') == ['conformance-extra'], 15)
        expect(evs, 'expected a policy-loaded status notification with policy=conformance-extra within 15 s of writing the file, got none')
        s = status_of(evs[0]['el'])
        want = hashlib.sha256(text).hexdigest()
        expect(s['attrs'].get('version') == [want] and s.get('role') == 'evaluator',
               'expected version=%s (SHA-256 of the file) from the evaluator, got %s' % (want, s['attrs']))

    def caps_of(self, jid):
        p = self.component_presence(jid)
        c = p.find(q('c', NS_CAPS)) if p is not None else None
        return c.get('ver') if c is not None else None

    async def c_policy_caps(self):
        before = self.state.get('ver-before')
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.caps_of(self.cfg['evaluator']) == before:
            await asyncio.sleep(0.2)
        ver = self.caps_of(self.cfg['evaluator'])
        expect(ver != before, 'expected a new caps ver in the evaluator presence once it loaded a policy (2.2), still %s' % ver)
        r = await self.o.disco_info(self.cfg['evaluator'])
        qr = r.child('query', NS_INFO)
        feats = {f.get('var') for f in qr.findall(q('feature', NS_INFO))}
        expect(NS_GRID + ':policy:conformance-extra' in feats, 'expected feature %s:policy:conformance-extra, got %s' % (NS_GRID, sorted(feats)))
        expect(caps_ver(qr) == ver, 'expected the new ver %s to be the hash of the new disco#info, it is %s' % (ver, caps_ver(qr)))

    async def c_policy_rejected(self):
        path = os.path.join(self.cfg['policies_dir'], 'conformance_broken.lua')
        with open(path, 'w') as f:
            f.write('return { id = "conformance-broken", rules = { \n')
        try:
            evs = await self.wait_policy_status('policy-rejected', lambda s: any('conformance_broken' in v for v in s['attrs'].get('file', [])), 15)
        finally:
            os.remove(path)
        expect(evs, 'expected a policy-rejected status notification with field file naming conformance_broken.lua, got none in 15 s')
        s = status_of(evs[0]['el'])
        expect(s['text'], 'expected a <text> with the compile error, got none')

    async def c_policy_removed(self):
        path = self.need('extra-path', 'the extra policy')
        os.remove(path)
        evs = await self.wait_policy_status('policy-removed', lambda s: s['attrs'].get('policy') == ['conformance-extra'], 15)
        expect(evs, 'expected a policy-removed status notification with policy=conformance-extra, got none in 15 s')

    # -- the reference orchestrator ---------------------------------------------------------
    def reference(self, conf, extra=()):
        ref = self.cfg['reference']
        return subprocess.run([ref['sacmrun'], ref['script'], conf, *extra], capture_output=True, text=True, timeout=90)

    async def c_reference_short(self):
        r = await asyncio.to_thread(self.reference, self.cfg['reference']['short'])
        err = r.stderr.strip().replace('\n', ' | ')
        expect(r.returncode != 0, 'expected a non-zero exit when 3 collectors were asked for and 2 exist, got 0')
        bares = [j.split('/')[0] for j in (self.c1['jid'], self.c2['jid'])]
        said_found = all(b in r.stderr for b in bares) or re.search(r'collectors?\D{0,20}2\s*/\s*3|2 of 3 collectors', r.stderr)
        expect(re.search(r'\b3\b', r.stderr) and said_found,
               'expected stderr to say it waited for 3 collectors and found the 2 there are, got %r' % err[-400:])

    async def c_reference_default(self):
        ref = self.cfg['reference']
        r = await asyncio.to_thread(self.reference, ref['default'], (ref['report'] + '.default',))
        want = {self.c1['endpoint'], self.c2['endpoint']}
        if r.returncode != 0:
            return   # it did not pretend success
        names = report_endpoints(ref['report'] + '.default')
        expect(want <= names, 'expected an assessment of the whole grid (2 collectors registered) or a non-zero exit, '
               'got exit 0 with endpoints %s; stderr %r' % (sorted(n for n in names if n), r.stderr.strip().replace('\n', ' | ')[-300:]))

    async def c_reference_full(self):
        ref = self.cfg['reference']
        r = await asyncio.to_thread(self.reference, ref['full'], (ref['report'],))
        expect(r.returncode == 0, 'expected exit 0 with both collectors, got %d: %r' % (r.returncode, r.stderr[-300:]))
        names = report_endpoints(ref['report'])
        want = {self.c1['endpoint'], self.c2['endpoint']}
        expect(want <= names, 'expected the report to cover both endpoints %s, got %s' % (sorted(want), sorted(n for n in names if n)))

    # -- the run --------------------------------------------------------------------------
    async def main(self):
        cfg = self.cfg
        self.o = Account(cfg, cfg['orchestrator'], role='orchestrator')
        self.p = Account(cfg, cfg['plain'], role=None)
        self.ca = Account(cfg, cfg['collector_account'], presence=False)   # no presence: it must not change the collector's caps
        await self.check('connect-orchestrator', self.connect, self.o)
        if not self.o.started.done():
            self.dead = 'the orchestrator account could not connect'
        await self.check('connect-plain-account', self.connect, self.p)
        await self.check('connect-collector-account', self.connect, self.ca)
        # the plain account registers with the repository as a component would (2.2)
        self.p.send_presence(pto=cfg['repository'], ptype='subscribe')
        await self.check('registration-presence', self.c_registration)
        await self.check('caps-in-presence', self.c_caps_element)
        for node in PN.values():
            await self.check('pubsub-orchestrator-subscribe-' + node.split('/')[1], self.c_subscribe, node)
        await self.check('pubsub-orchestrator-affiliations', self.c_orch_affiliations)
        await self.check('pubsub-orchestrator-publishes-status', self.c_orch_publish)
        await self.check('pubsub-orchestrator-cannot-publish-posture', self.c_orch_publish_posture)
        await self.check('pubsub-create-node-forbidden', self.c_create_forbidden)
        await self.check('pubsub-node-metadata', self.c_node_metadata)
        roles = {'collector': self.c1['jid'], 'collector2': self.c2['jid'], 'evaluator': cfg['evaluator'],
                 'repository': self.repo_full or cfg['repository']}
        for name, jid in roles.items():
            await self.check('disco-identity-' + name, self.c_identity, name, jid)
            await self.check('disco-features-' + name, self.c_features, name, jid)
            await self.check('disco-info-form-' + name, self.c_info_form, name, jid)
            await self.check('caps-ver-' + name, self.c_caps_ver, name, jid)
            await self.check('commands-list-' + name, self.c_command_list, name, jid)
        await self.check('disco-upload-service', self.c_upload_disco)
        # collect
        await self.check('collect-execute-form', self.c_execute_stage, self.c1['jid'], 'collect')
        await self.check('collect-form-fields', self.c_collect_form)
        await self.check('collect-form-timeout-xs-integer', self.c_collect_timeout_datatype)
        await self.check('collect-complete', self.c_collect_complete)
        await self.check('posture-notifications', self.c_posture_notifications)
        await self.check('collect-default-correlation-uuid', self.c_default_correlation)
        await self.check('posture-attributes', self.c_posture_attributes)
        await self.check('posture-inline-data', self.c_posture_inline)
        await self.check('status-collection-started', self.c_started)
        await self.check('status-collection-done', self.c_done)
        await self.check('status-collection-done-kinds', self.c_done_kinds)
        await self.check('posture-by-reference', self.c_reference)
        await self.check('fetch-reference-size-digest', self.c_fetch_reference)
        await self.check('fetch-etag-head', self.c_fetch_conditional)
        await self.check('fetch-wrong-key-404', self.c_fetch_wrong_key)
        await self.check('posture-error-timeout', self.c_error_timeout)
        await self.check('collect-no-kinds-answer', self.c_no_kinds)
        await self.check('collect-no-kinds-no-unasked-kind', self.c_no_kinds_unasked)
        await self.check('collect-no-kinds-published-count', self.c_no_kinds_published)
        for v in ('soon', '2.5', '0', '-5'):
            await self.check('collect-timeout-%s-bad-payload' % v, self.c_bad_timeout, v)
        await self.check('collect-wrong-form-type', self.c_wrong_form_type, self.c1['jid'], 'collect', {'kinds': ['os'], 'correlation': str(uuid.uuid4())})
        await self.check('collect-bad-action-next', self.c_bad_action)
        await self.check('collect-bad-sessionid', self.c_bad_sessionid)
        await self.check('command-unknown-node', self.c_unknown_node)
        await self.check('collect-forbidden-non-peer', self.c_forbidden, self.c1['jid'], 'collect')
        await self.check('collect-forbidden-non-peer-complete', self.c_forbidden_complete)
        await self.check('cancel-forbidden-non-peer', self.c_forbidden, self.c1['jid'], 'cancel')
        await self.check('status-forbidden-non-peer', self.c_forbidden, self.c1['jid'], 'status')
        # cancel
        await self.check('cancel-form', self.c_cancel_form)
        await self.check('cancel-running-collection', self.c_cancel)
        await self.check('status-collection-failed-fields', self.c_failed_fields)
        await self.check('cancel-unknown-item-not-found', self.c_cancel_unknown)
        await self.check('cancel-missing-correlation', self.c_cancel_missing)
        # status
        for name in ('collector', 'evaluator', 'repository'):
            await self.check('status-one-stage-' + name, self.c_status, name, roles[name])
            await self.check('status-fields-' + name, self.c_status_fields, name, roles[name])
        await self.check('status-members', self.c_members)
        # evaluate
        await self.check('evaluate-form', self.c_evaluate_form)
        await self.check('evaluate-totals', self.c_evaluate)
        await self.check('evaluate-failed-field', self.c_evaluate_failed_field)
        await self.check('results-notification', self.c_results_notification)
        await self.check('results-by-reference', self.c_results_reference)
        await self.check('result-attributes', self.c_result_attributes)
        await self.check('result-values', self.c_result_values)
        await self.check('result-notchecked', self.c_result_notchecked)
        await self.check('result-error-posture-error', self.c_result_error_posture)
        await self.check('result-evidence-bounds', self.c_result_evidence)
        await self.check('status-evaluation-done', self.c_evaluation_done)
        await self.check('evaluate-unknown-endpoint-failed', self.c_evaluate_unknown_endpoint)
        await self.check('evaluate-unknown-correlation', self.c_evaluate_unknown_correlation)
        await self.check('evaluate-wrong-form-type', self.c_wrong_form_type, cfg['evaluator'], 'evaluate', {'endpoints': [self.c1['endpoint']]})
        await self.check('evaluate-policies-field', self.c_evaluate_policies)
        await self.check('evaluate-forbidden-non-peer', self.c_forbidden, cfg['evaluator'], 'evaluate')
        await self.check('result-not-applicable-posture', self.c_notapplicable)
        # query, get
        await self.check('query-form', self.c_query_form)
        await self.check('query-posture', self.c_query_posture)
        await self.check('query-attribute-value', self.c_query_attribute)
        await self.check('query-results', self.c_query_results)
        await self.check('query-history', self.c_query_history)
        await self.check('query-paging', self.c_query_paging)
        await self.check('query-filters', self.c_query_filters)
        await self.check('query-max-ten-bad-payload', self.c_query_bad, {'type': 'posture', 'max': 'ten'}, 'max')
        await self.check('query-since-yesterday-bad-payload', self.c_query_bad, {'type': 'posture', 'since': 'yesterday'}, 'since')
        await self.check('query-filter-not-applicable-bad-payload', self.c_query_bad, {'type': 'results', 'kind': 'os'}, 'kind')
        await self.check('query-type-missing-bad-payload', self.c_query_bad, {'endpoint': self.c1['endpoint']}, 'type')
        await self.check('query-forbidden-non-peer', self.c_forbidden, roles['repository'], 'query')
        await self.check('get-forbidden-non-peer', self.c_forbidden, roles['repository'], 'get')
        await self.check('get-posture', self.c_get, 'some-posture-id', 'posture', NS_POSTURE)
        await self.check('get-result', self.c_get, 'some-result-id', 'result', NS_RESULT)
        await self.check('get-unknown-item-not-found', self.c_get_unknown)
        await self.check('pubsub-nodes-keep-no-items', self.c_no_items)
        # affiliations of an account that advertises no role (it registered at the start)
        await self.check('pubsub-plain-account-no-affiliation', self.c_plain_no_affiliation)
        await self.check('pubsub-plain-account-cannot-subscribe', self.c_plain_subscribe)
        # uploads
        await self.check('upload-slot-forbidden-plain-account', self.c_slot_forbidden, self.p, 'an account with no role')
        await self.check('upload-slot-forbidden-orchestrator', self.c_slot_forbidden, self.o, 'the orchestrator')
        await self.check('upload-slot-file-too-large', self.c_slot_too_large)
        await self.check('upload-slot-malformed', self.c_slot_malformed)
        await self.check('upload-slot', self.c_slot)
        await self.check('upload-put-201-receipt', self.c_put_own)
        await self.check('upload-put-reused-slot-403-then-200', self.c_put_again)
        await self.check('fetch-receipt-content', self.c_fetch_receipt)
        await self.check('fetch-slot-get-url-posture-set', self.c_fetch_slot_get)
        await self.check('upload-put-other-collector-403', self.c_put_other_collector)
        await self.check('upload-put-wrong-content-type-415', self.c_put_wrong_type)
        await self.check('upload-put-wrong-id-400', self.c_put_wrong_id)
        await self.check('upload-put-wrong-size-400', self.c_put_wrong_size)
        await self.check('upload-put-not-well-formed-400', self.c_put_not_well_formed)
        await self.check('upload-put-not-a-set-415', self.c_put_not_a_set)
        await self.check('upload-put-posture-of-other-collector-403', self.c_put_child_other)
        await self.check('upload-refusals-counted', self.c_refused_counted)
        # policies loaded, rejected, removed
        await self.check('status-policy-loaded', self.c_policy_loaded)
        await self.check('caps-ver-changes-with-policies', self.c_policy_caps)
        await self.check('status-policy-rejected', self.c_policy_rejected)
        await self.check('status-policy-removed', self.c_policy_removed)
        # the reference orchestrator (examples/grid/orchestrator.lua)
        await self.check('reference-orchestrator-says-what-it-found', self.c_reference_short)
        await self.check('reference-orchestrator-covers-every-endpoint', self.c_reference_full)
        await self.check('reference-orchestrator-default-no-false-success', self.c_reference_default)
        # last: it leaves 64 slots outstanding for the collector's account
        await self.check('upload-slot-limit-resource-constraint', self.c_slot_limit)
        for acc in (self.ca, self.p, self.o):
            acc.disconnect()
        await asyncio.sleep(0.3)


EXTRA_POLICY = '''return {
  id = "conformance-extra", title = "A policy the conformance client adds", description = "spec/conformance/orchestrator.py",
  rules = {
    { id = "conf-extra-os", title = "os again", severity = "info", rationale = "a test", requires = { "os" },
      check = function(p) return "pass", "os" end },
  },
}
'''


def report_endpoints(path):
    rep = json.load(open(path))
    eps = rep.get('endpoints')
    names = set()
    if isinstance(eps, dict):
        names = set(eps)
    elif isinstance(eps, list):
        for e in eps:
            names |= {e.get('endpoint'), e.get('id'), e.get('hostname')}
    return names


def now():
    t = time.time()
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t)) + '.%03dZ' % int((t % 1) * 1000)


def main():
    logging.basicConfig(level=logging.CRITICAL)
    text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
    suite = Suite(json.loads(text))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(asyncio.wait_for(suite.main(), 400))
    except asyncio.TimeoutError:
        suite.report('suite-deadline', False, 'expected the suite to finish within 400 s')
    print('%d passed, %d failed' % (suite.passed, suite.failed), flush=True)
    sys.exit(0 if suite.failed == 0 else 1)


if __name__ == '__main__':
    main()
