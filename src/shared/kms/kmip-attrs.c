/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The KMIP backend: key attributes, the state mapping, lookup (see kmip-internal.h). */

#include "kmip-internal.h"

/* ---- attributes ---- */

static bool text_eq(const kmip_item *i, const char *s) {
        size_t n = strlen(s);

        return i && i->type == KMIP_TYPE_TEXT_STRING && i->bytes.size == n && memcmp(i->bytes.data, s, n) == 0;
}

static kms_key_state state_from_kmip(uint32_t s) {
        switch (s) {
        case STATE_ACTIVE:
                return KMS_KEY_ENABLED;
        case STATE_PRE_ACTIVE:
        case STATE_DEACTIVATED:
        case STATE_COMPROMISED:
                return KMS_KEY_DISABLED;
        case STATE_DESTROYED:
        case STATE_DESTROYED_COMPROMISED:
                return KMS_KEY_DESTROYED;
        default:
                return _KMS_KEY_STATE_INVALID;
        }
}

const char *kmip_state_to_string(uint32_t s) {
        static const char *const names[] = {
                [STATE_PRE_ACTIVE] = "Pre-Active",   [STATE_ACTIVE] = "Active",
                [STATE_DEACTIVATED] = "Deactivated", [STATE_COMPROMISED] = "Compromised",
                [STATE_DESTROYED] = "Destroyed",     [STATE_DESTROYED_COMPROMISED] = "Destroyed Compromised",
        };

        return s < ELEMENTSOF(names) && names[s] ? names[s] : "unknown";
}

/* The value of a Link attribute (KMIP 1.4 section 3.35): a Structure of Link Type and Linked Object Identifier.
 * -EPROTO when it is not that (or the identifier is empty), -ENOMEM. */
int kmip_parse_link(const kmip_item *value, uint32_t *ret_type, char **ret_id) {
        _cleanup_free_ char *id = NULL;
        uint32_t type;
        int r;

        if (!value || value->type != KMIP_TYPE_STRUCTURE)
                return -EPROTO;
        r = kmip_item_get_enum(value, KMIP_TAG_LINK_TYPE, &type);
        if (r < 0)
                return -EPROTO;
        r = kmip_item_get_text(value, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, &id);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || isempty(id) || strlen(id) > KMIP_ID_MAX)
                return -EPROTO;
        *ret_type = type;
        *ret_id = TAKE_PTR(id);
        return 0;
}

/* Fills @ret from a Get Attributes response payload. -EPROTO, -ENOENT (not a symmetric key). */
int kmip_parse_key_info(kmip_backend *k, const kmip_item *payload, kmip_key_info *ret) {
        _cleanup_free_ char *id = NULL, *alias = NULL, *description = NULL, *replacement = NULL, *replaced = NULL;
        const kmip_item *a = NULL;
        bool have_state = false;
        uint32_t state = 0, type = OBJECT_TYPE_SYMMETRIC_KEY;
        int64_t created = 0;
        int r;

        r = kmip_item_get_text(payload, KMIP_TAG_UNIQUE_IDENTIFIER, &id);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || isempty(id))
                return kmip_protocol_error(k, "Get Attributes without unique identifier");

        while ((a = kmip_item_next(payload, a, KMIP_TAG_ATTRIBUTE))) {
                const kmip_item *name = kmip_item_child(a, KMIP_TAG_ATTRIBUTE_NAME),
                                *value = kmip_item_child(a, KMIP_TAG_ATTRIBUTE_VALUE);

                if (!name || name->type != KMIP_TYPE_TEXT_STRING || !value)
                        return kmip_protocol_error(k, "attribute without name or value");
                if (text_eq(name, "State")) {
                        if (value->type != KMIP_TYPE_ENUMERATION)
                                return kmip_protocol_error(k, "State is not an enumeration");
                        state = value->enumeration;
                        have_state = true;
                } else if (text_eq(name, "Object Type")) {
                        if (value->type != KMIP_TYPE_ENUMERATION)
                                return kmip_protocol_error(k, "Object Type is not an enumeration");
                        type = value->enumeration;
                } else if (text_eq(name, "Initial Date")) {
                        if (value->type != KMIP_TYPE_DATE_TIME)
                                return kmip_protocol_error(k, "Initial Date is not a Date-Time");
                        created = value->long_integer;
                } else if (text_eq(name, "Name")) {
                        if (alias)
                                continue; /* the first name is the alias */
                        r = kmip_item_get_text(value, KMIP_TAG_NAME_VALUE, &alias);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                return kmip_protocol_error(k, "Name without a text value");
                } else if (text_eq(name, "Link")) {
                        _cleanup_free_ char *target = NULL;
                        uint32_t link_type;

                        r = kmip_parse_link(value, &link_type, &target);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                return kmip_protocol_error(k, "Link without a type or a linked object identifier");
                        /* Other link types (certificates, derived keys...) do not concern us. */
                        if (link_type == LINK_REPLACEMENT_OBJECT) {
                                if (replacement && !streq(replacement, target))
                                        return kmip_protocol_error(k, "key with two Replacement Object Links");
                                free(replacement);
                                replacement = TAKE_PTR(target);
                        } else if (link_type == LINK_REPLACED_OBJECT) {
                                if (replaced && !streq(replaced, target))
                                        return kmip_protocol_error(k, "key with two Replaced Object Links");
                                free(replaced);
                                replaced = TAKE_PTR(target);
                        }
                } else if (text_eq(name, "Application Specific Information")) {
                        const kmip_item *ns = kmip_item_child(value, KMIP_TAG_APPLICATION_NAMESPACE);

                        if (description || !text_eq(ns, KMIP_DESCRIPTION_NAMESPACE))
                                continue;
                        r = kmip_item_get_text(value, KMIP_TAG_APPLICATION_DATA, &description);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                return kmip_protocol_error(k, "Application Specific Information without data");
                }
        }

        if (type != OBJECT_TYPE_SYMMETRIC_KEY)
                return kms_backend_set_error(&k->base, -ENOENT, "KMIP object %s is not a symmetric key", id);
        if (!have_state || state_from_kmip(state) < 0)
                return kmip_protocol_error(k, "key without a valid State");

        *ret = (kmip_key_info) {
                .key = {
                        .id = TAKE_PTR(id),
                        .alias = TAKE_PTR(alias),
                        .description = TAKE_PTR(description),
                        .state = state_from_kmip(state),
                        .created = created > 0 ? (usec_t) created * USEC_PER_SEC : 0,
                        .version = 1,
                },
                .kmip_state = state,
                .replacement = TAKE_PTR(replacement),
                .replaced = TAKE_PTR(replaced),
        };
        return 0;
}

int kmip_get_key_info(kmip_backend *k, const char *id, kmip_key_info *ret) {
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        const kmip_item *payload;
        int r;

        r = kmip_call_one(k, OP_GET_ATTRIBUTES, true, kmip_build_get_attributes, id, &tree, &payload);
        if (r == -ENOENT)
                return kms_backend_set_error(&k->base, r, "no key %s on KMIP server %s:%u", id, k->host, k->port);
        if (r < 0)
                return r;
        return kmip_parse_key_info(k, payload, ret);
}

/* Get Attributes for @n ids, batched. Keys that vanished or that this client may not see are
 * skipped. Returns how many were filled in @ret (sized @n). */
int kmip_get_key_infos(kmip_backend *k, char *const *ids, size_t n, kmip_key_info *ret) {
        size_t filled = 0;
        int r;

        for (size_t start = 0; start < n; start += KMIP_GET_ATTRIBUTES_BATCH) {
                _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
                size_t m = MIN(n - start, (size_t) KMIP_GET_ATTRIBUTES_BATCH);
                kmip_result *res = NULL;
                kmip_writer w = {};

                kmip_request_begin(&w, m);
                for (size_t i = 0; i < m; i++) {
                        kmip_item_begin(&w, OP_GET_ATTRIBUTES, i, m);
                        kmip_build_get_attributes(&w, ids[start + i]);
                        kmip_item_end(&w);
                }
                kmip_writer_end(&w);
                r = kmip_call(k, &w, m, true, &tree, &res);
                if (r < 0)
                        goto fail;

                for (size_t i = 0; i < m; i++) {
                        if (res[i].status != STATUS_SUCCESS &&
                            (res[i].reason == REASON_ITEM_NOT_FOUND || res[i].reason == REASON_PERMISSION_DENIED))
                                continue;
                        r = kmip_result_check(k, OP_GET_ATTRIBUTES, &res[i]);
                        if (r >= 0 && !res[i].payload)
                                r = kmip_protocol_error(k, "no response payload");
                        if (r >= 0)
                                r = kmip_parse_key_info(k, res[i].payload, &ret[filled]);
                        if (r == -ENOENT) /* not a symmetric key after all */
                                continue;
                        if (r < 0) {
                                kmip_results_free(res, m);
                                goto fail;
                        }
                        filled++;
                }
                kmip_results_free(res, m);
        }
        return (int) filled;

fail:
        for (size_t i = 0; i < filled; i++)
                kmip_key_info_done(&ret[i]);
        return r;
}

/* Locate symmetric keys, named @name when not NULL. */
int kmip_locate(kmip_backend *k, const char *name, char ***ret, size_t *ret_n) {
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        const kmip_item *payload, *it = NULL;
        char **ids = NULL;
        size_t n = 0;
        int r;

        r = kmip_call_one(k, OP_LOCATE, true, kmip_build_locate, name, &tree, &payload);
        if (r < 0)
                return r;

        while ((it = kmip_item_next(payload, it, KMIP_TAG_UNIQUE_IDENTIFIER))) {
                char **a;

                a = reallocarray(ids, n + 1, sizeof(char *));
                if (!a) {
                        kmip_strv_free_n(ids, n);
                        return -ENOMEM;
                }
                ids = a;
                r = kmip_item_text_dup(it, &ids[n]);
                if (r >= 0 && isempty(ids[n])) {
                        free(ids[n]);
                        r = -EPROTO;
                }
                if (r < 0) {
                        kmip_strv_free_n(ids, n);
                        return r == -ENOMEM ? r : kmip_protocol_error(k, "bad unique identifier in Locate");
                }
                n++;
        }
        *ret = ids;
        *ret_n = n;
        return 0;
}

/* Orders keys by Initial Date, then id (numerically when both are numbers). */
int kmip_cmp_key(const void *a, const void *b) {
        const kms_key *x = &((const kmip_key_info *) a)->key, *y = &((const kmip_key_info *) b)->key;
        size_t lx = strlen(x->id), ly = strlen(y->id);

        if (x->created != y->created)
                return x->created < y->created ? -1 : 1;
        if (lx != ly && strspn(x->id, "0123456789") == lx && strspn(y->id, "0123456789") == ly)
                return lx < ly ? -1 : 1;
        return strcmp(x->id, y->id);
}

/* All keys carrying @alias, oldest first. */
int kmip_find_by_alias(kmip_backend *k, const char *alias, kmip_key_info **ret, size_t *ret_n) {
        kmip_key_info *infos;
        char **ids = NULL;
        size_t n = 0;
        int r;

        r = kmip_locate(k, alias, &ids, &n);
        if (r < 0)
                return r;
        if (n == 0) {
                free(ids);
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        infos = calloc(n, sizeof(kmip_key_info));
        if (!infos) {
                kmip_strv_free_n(ids, n);
                return -ENOMEM;
        }
        r = kmip_get_key_infos(k, ids, n, infos);
        kmip_strv_free_n(ids, n);
        if (r < 0) {
                free(infos);
                return r;
        }
        n = (size_t) r;
        if (n > 1)
                qsort(infos, n, sizeof(kmip_key_info), kmip_cmp_key);
        *ret = infos;
        *ret_n = n;
        return 0;
}

void kmip_key_infos_free(kmip_key_info *infos, size_t n) {
        for (size_t i = 0; i < n; i++)
                kmip_key_info_done(&infos[i]);
        free(infos);
}

static int get_by_alias(kmip_backend *k, const char *alias, kmip_key_info *ret) {
        kmip_key_info *infos = NULL;
        size_t n = 0, live = 0, pick = 0;
        int r;

        r = kmip_find_by_alias(k, alias, &infos, &n);
        if (r < 0)
                return r;
        if (n == 0)
                return kms_backend_set_error(&k->base, -ENOENT, "no key %s on KMIP server %s:%u", alias, k->host,
                                             k->port);
        /* Destroyed keys a server keeps around do not make a live alias ambiguous. */
        for (size_t i = 0; i < n; i++)
                if (infos[i].key.state != KMS_KEY_DESTROYED) {
                        live++;
                        pick = i;
                }
        if (n == 1 || live == 1) {
                *ret = infos[pick];
                infos[pick] = (kmip_key_info) {};
                kmip_key_infos_free(infos, n);
                return 0;
        }
        {
                char list[256] = "";
                size_t used = 0;

                for (size_t i = 0; i < n && used < sizeof list - 1; i++) {
                        int m = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", infos[i].key.id);
                        if (m < 0)
                                break;
                        used = MIN(used + (size_t) m, sizeof list - 1);
                }
                r = kms_backend_set_error(&k->base, -EINVAL,
                                          "alias %s names %zu keys on KMIP server %s:%u (ids %s): use a key id", alias,
                                          n, k->host, k->port, list);
        }
        kmip_key_infos_free(infos, n);
        return r;
}

static bool all_digits(const char *s) {
        return *s && strspn(s, "0123456789") == strlen(s);
}

/* By unique identifier or alias. Server ids are often numbers ("17") or UUIDs, which valid aliases
 * rarely look like: such refs are tried as ids first, others as aliases first. */
int kmip_resolve(kmip_backend *k, const char *ref, kmip_key_info *ret) {
        bool alias_ok, alias_first;
        int r;

        if (isempty(ref) || strlen(ref) > 1024)
                return kms_backend_set_error(&k->base, -EINVAL, "invalid key reference");
        alias_ok = kms_alias_valid(ref);
        alias_first = alias_ok && !all_digits(ref);
        if (alias_first) {
                r = get_by_alias(k, ref, ret);
                if (r != -ENOENT)
                        return r;
        }
        r = kmip_get_key_info(k, ref, ret);
        if (r == -ENOENT && alias_ok && !alias_first)
                r = get_by_alias(k, ref, ret);
        if (r == -ENOENT)
                return kms_backend_set_error(&k->base, r, "no key %s on KMIP server %s:%u", ref, k->host, k->port);
        if (r == -EACCES)
                return kms_backend_set_error(&k->base, r, "KMIP server %s:%u denies this client access to key %s",
                                             k->host, k->port, ref);
        return r;
}

/* ---- CMKs and their versions (see "Rotation" in kmip.c) ---- */

void kmip_chain_done(kmip_chain *c) {
        kmip_strv_free_n(c->ids, c->n);
        kmip_key_info_done(&c->first);
        kmip_key_info_done(&c->newest);
        *c = (kmip_chain) {};
}

static int strdup_or_null(const char *s, char **ret) {
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

/* The CMK whose first key is @first and newest version @newest (the n-th): the first key's id and Initial Date,
 * the newest's state, name (the alias moves to the replacement on ReKey) and description. */
int kmip_cmk_key(const kmip_key_info *first, const kmip_key_info *newest, size_t n, kms_key *ret) {
        kms_key key = {
                .state = newest->key.state,
                .created = first->key.created,
                .version = (unsigned) n,
                .rotated = n > 1 ? newest->key.created : 0,
        };
        int r;

        if ((r = strdup_or_null(first->key.id, &key.id)) < 0 ||
            (r = strdup_or_null(newest->key.alias ?: first->key.alias, &key.alias)) < 0 ||
            (r = strdup_or_null(newest->key.description ?: first->key.description, &key.description)) < 0) {
                kms_key_done(&key);
                return r;
        }
        *ret = key;
        return 0;
}

int kmip_chain_key(const kmip_chain *c, kms_key *ret) {
        return kmip_cmk_key(&c->first, kmip_chain_newest(c), c->n, ret);
}

static bool chain_has(const kmip_chain *c, const char *id) {
        for (size_t i = 0; i < c->n; i++)
                if (streq(c->ids[i], id))
                        return true;
        return false;
}

/* The CMK @start (taken over) belongs to: back along the Replaced Object Links to the first key, then forward
 * along the Replacement Object Links to the newest, one Get Attributes each. A link to a key the server does
 * not have (any more) is -ENOENT; links that disagree or loop are -EPROTO. */
int kmip_chain_load(kmip_backend *k, kmip_key_info *start, kmip_chain *ret) {
        kmip_key_info cur = *start;
        kmip_chain c = {};
        size_t steps = 0;
        int r;

        *start = (kmip_key_info) {};
        while (cur.replaced) {
                kmip_key_info prev = {};

                if (++steps >= KMIP_VERSIONS_MAX) {
                        r = kmip_protocol_error(k, "more Replaced Object Links than evs-cryptd follows");
                        goto fail_cur;
                }
                r = kmip_get_key_info(k, cur.replaced, &prev);
                if (r == -ENOENT)
                        r = kms_backend_set_error(&k->base, r, "key %s replaced key %s, which is not on KMIP server %s:%u",
                                                  cur.key.id, cur.replaced, k->host, k->port);
                if (r < 0)
                        goto fail_cur;
                if (!prev.replacement || !streq(prev.replacement, cur.key.id)) {
                        kmip_key_info_done(&prev);
                        r = kms_backend_set_error(&k->base, -EPROTO,
                                                  "KMIP server %s:%u: key %s says it replaced key %s, which does not "
                                                  "link back to it", k->host, k->port, cur.key.id, cur.replaced);
                        goto fail_cur;
                }
                kmip_key_info_done(&cur);
                cur = prev;
        }

        c.first = cur;
        cur = (kmip_key_info) {};
        c.ids = calloc(1, sizeof(char *));
        if (!c.ids || !(c.ids[0] = strdup(c.first.key.id))) {
                r = -ENOMEM;
                goto fail;
        }
        c.n = 1;
        for (const kmip_key_info *at = &c.first; at->replacement; at = &c.newest) {
                kmip_key_info next = {};
                char **a;

                if (c.n >= KMIP_VERSIONS_MAX) {
                        r = kmip_protocol_error(k, "more Replacement Object Links than evs-cryptd follows");
                        goto fail;
                }
                if (chain_has(&c, at->replacement)) {
                        r = kmip_protocol_error(k, "Replacement Object Links that loop");
                        goto fail;
                }
                r = kmip_get_key_info(k, at->replacement, &next);
                if (r == -ENOENT)
                        r = kms_backend_set_error(&k->base, r,
                                                  "version %zu of key %s (key %s) is not on KMIP server %s:%u", c.n + 1,
                                                  c.ids[0], at->replacement, k->host, k->port);
                if (r < 0)
                        goto fail;
                if (next.replaced && !streq(next.replaced, at->key.id)) {
                        r = kms_backend_set_error(&k->base, -EPROTO,
                                                  "KMIP server %s:%u: key %s replaced key %s, not key %s whose "
                                                  "replacement it is", k->host, k->port, next.key.id, next.replaced,
                                                  at->key.id);
                        kmip_key_info_done(&next);
                        goto fail;
                }
                a = reallocarray(c.ids, c.n + 1, sizeof(char *));
                if (!a) {
                        kmip_key_info_done(&next);
                        r = -ENOMEM;
                        goto fail;
                }
                c.ids = a;
                c.ids[c.n] = strdup(next.key.id);
                if (!c.ids[c.n]) {
                        kmip_key_info_done(&next);
                        r = -ENOMEM;
                        goto fail;
                }
                c.n++;
                kmip_key_info_done(&c.newest);
                c.newest = next;
        }
        *ret = c;
        return 0;

fail_cur:
        kmip_key_info_done(&cur);
fail:
        kmip_chain_done(&c);
        return r;
}

/* The CMK key @id is a version of (usually its own id). */
int kmip_chain_get(kmip_backend *k, const char *id, kmip_chain *ret) {
        kmip_key_info info = {};
        int r;

        r = kmip_get_key_info(k, id, &info);
        if (r < 0)
                return r;
        return kmip_chain_load(k, &info, ret);
}

/* The CMK a reference (id of any of its versions, or alias) names. */
int kmip_chain_resolve(kmip_backend *k, const char *ref, kmip_chain *ret) {
        kmip_key_info info = {};
        int r;

        r = kmip_resolve(k, ref, &info);
        if (r < 0)
                return r;
        return kmip_chain_load(k, &info, ret);
}
