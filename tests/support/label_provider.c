/*
 * A security label provider for tests: registers the provider "rdsbackup_test", which accepts the
 * labels "public", "internal" and "secret" (and the removal of a label) on any object.
 * PostgreSQL only stores labels for a provider that is loaded, so a test needs one to prove that a
 * backup and restore keep SECURITY LABEL; Debian packages none that runs without SELinux.
 */
#include "postgres.h"

#include "commands/seclabel.h"
#include "fmgr.h"

PG_MODULE_MAGIC;

void _PG_init(void);

static void
check_label(const ObjectAddress *object, const char *label)
{
	if (label == NULL || strcmp(label, "public") == 0 || strcmp(label, "internal") == 0 ||
		strcmp(label, "secret") == 0)
		return;
	ereport(ERROR, (errcode(ERRCODE_INVALID_NAME), errmsg("invalid security label \"%s\"", label)));
}

void
_PG_init(void)
{
	register_label_provider("rdsbackup_test", check_label);
}
