from django.db import migrations

# The test looks for this in the DjangoService's status (the tail of the Job's log).
FAILURE = "the sample app's broken release cannot migrate"


def fail(apps, schema_editor):
    raise RuntimeError(FAILURE)


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]
    operations = [migrations.RunPython(fail, migrations.RunPython.noop)]
