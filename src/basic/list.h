/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Doubly linked lists threaded through an item's own prev and next members, with head and tail pointers.
 * @head, @tail and @item are evaluated more than once: pass plain lvalues. */

/* Puts @item after @after, or first when @after is NULL. */
#define LIST_INSERT_AFTER(head, tail, after, item)                 \
        do {                                                       \
                __typeof__(item) _la = (after); /* may be @tail */ \
                (item)->prev = _la;                                \
                (item)->next = _la ? _la->next : (head);           \
                if ((item)->next)                                  \
                        (item)->next->prev = (item);               \
                else                                               \
                        (tail) = (item);                           \
                if (_la)                                           \
                        _la->next = (item);                        \
                else                                               \
                        (head) = (item);                           \
        } while (0)

#define LIST_APPEND(head, tail, item) LIST_INSERT_AFTER(head, tail, tail, item)

#define LIST_REMOVE(head, tail, item)                    \
        do {                                             \
                if ((item)->prev)                        \
                        (item)->prev->next = (item)->next; \
                else                                     \
                        (head) = (item)->next;           \
                if ((item)->next)                        \
                        (item)->next->prev = (item)->prev; \
                else                                     \
                        (tail) = (item)->prev;           \
        } while (0)
