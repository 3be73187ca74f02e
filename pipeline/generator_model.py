"""Model-from-code entry for MLflow: the pyfunc model is rebuilt from this file
and the generator weights, so loading a registered model unpickles nothing."""

from mlflow.models import set_model

from pipeline.serving import GeneratorModel

set_model(GeneratorModel())
