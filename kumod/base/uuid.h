/* SPDX-License-Identifier: Apache-2.0 */
/* Random (version 4) UUIDs in lower-case hyphenated text, for node ids and
 * admin entry ids. Any module may call it; getrandom() failure aborts. */
#ifndef KUMOD_BASE_UUID_H
#define KUMOD_BASE_UUID_H

#define UUID_TEXT_LEN 36

/* Writes a fresh UUID and its NUL into out. */
void uuid_random(char out[UUID_TEXT_LEN + 1]);

#endif
